"""The config's ``finetune`` section as checked dataclasses (the defaults live in configs/demo.py only).

Every value is checked here with a message giving its valid range, before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import ml_collections

from jaxprobe.errors import ConfigError
from jaxprobe.finetune.lora import LoraSpec

ANSWER_FORMS = ("letter", "letter_and_name")  # what the model is taught to answer (generation parses both)
MONITORS = ("accuracy", "loss", "last")  # what early stopping and the kept weights read on `val` ("last": none)
VISION_METHODS = ("full", "lora")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """One training run: optimizer, schedule, batches, evaluation on ``val``, checkpoints."""

    learning_rate: float
    epochs: int
    batch_size: int  # rows per micro-batch (padded to a multiple of the mesh's data axis)
    grad_accum: int  # micro-batches per optimizer step
    warmup_ratio: float
    weight_decay: float
    max_grad_norm: float
    eval_every: int  # optimizer steps between evaluations on val (0: at the end of every epoch)
    patience: int  # evaluations without improvement before stopping (0: never stop early)
    monitor: str
    save_every: int  # optimizer steps between checkpoints (also saved at every evaluation and at the end)
    seed: int

    def fingerprint(self, extra: dict[str, Any] | None = None) -> str:
        """What a training run's result depends on: checkpoints of another fingerprint are never resumed."""
        payload = {**dataclasses.asdict(self), **(extra or {})}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _problems_of_schedule(section: ml_collections.ConfigDict, where: str) -> list[str]:
    checks = [
        ("learning_rate", lambda v: isinstance(v, int | float) and v > 0, "a number > 0"),
        ("epochs", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
        ("batch_size", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
        ("grad_accum", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
        ("warmup_ratio", lambda v: isinstance(v, int | float) and 0 <= v < 1, "a number in [0, 1)"),
        ("weight_decay", lambda v: isinstance(v, int | float) and v >= 0, "a number >= 0"),
        ("max_grad_norm", lambda v: isinstance(v, int | float) and v > 0, "a number > 0"),
        ("eval_every", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0 (0: every epoch)"),
        ("patience", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0 (0: no early stopping)"),
        ("monitor", lambda v: v in MONITORS, f"one of {MONITORS}"),
        ("save_every", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
        ("seed", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    ]
    return [f"{where}.{key}={section[key]!r}: expected {valid}" for key, check, valid in checks
            if not check(section[key])]


def _problems_of_lora(section: ml_collections.ConfigDict, where: str) -> list[str]:
    problems = []
    if not (isinstance(section.rank, int) and section.rank >= 1):
        problems.append(f"{where}.rank={section.rank!r}: expected an integer >= 1")
    if not (isinstance(section.alpha, int | float) and section.alpha > 0):
        problems.append(f"{where}.alpha={section.alpha!r}: expected a number > 0")
    if not (isinstance(section.dropout, int | float) and 0 <= section.dropout < 1):
        problems.append(f"{where}.dropout={section.dropout!r}: expected a number in [0, 1)")
    if not (isinstance(section.targets, tuple | list) and section.targets
            and all(isinstance(t, str) and t for t in section.targets)):
        problems.append(f"{where}.targets={section.targets!r}: expected a non-empty tuple of regexes over "
                        "'/'-joined param paths, e.g. ('decoder/layers/self_attn/q_proj/kernel',)")
    return problems


def schedule_of(section: ml_collections.ConfigDict) -> Schedule:
    return Schedule(**{field.name: section[field.name] for field in dataclasses.fields(Schedule)})


def lora_of(section: ml_collections.ConfigDict) -> LoraSpec:
    return LoraSpec(int(section.rank), float(section.alpha), float(section.dropout), tuple(section.targets))


@dataclasses.dataclass(frozen=True)
class VisionSettings:
    """The vision-tower baseline: tower + linear head, cross-entropy, full fine-tuning or LoRA on the tower."""

    enabled: bool
    method: str
    lora: LoraSpec
    schedule: Schedule


@dataclasses.dataclass(frozen=True)
class FinetuneSettings:
    enabled: bool  # `jaxprobe run`: before -> fine-tune -> after
    answer: str
    remat: bool
    export_peft: bool
    lora: LoraSpec
    schedule: Schedule
    vision: VisionSettings

    @classmethod
    def from_config(cls, finetune: ml_collections.ConfigDict) -> FinetuneSettings:
        """The ``finetune`` section, checked; every problem is named with its valid range in one message."""
        problems = _problems_of_lora(finetune.lora, "finetune.lora")
        problems += _problems_of_schedule(finetune.train, "finetune.train")
        problems += _problems_of_lora(finetune.vision.lora, "finetune.vision.lora")
        problems += _problems_of_schedule(finetune.vision.train, "finetune.vision.train")
        if finetune.answer not in ANSWER_FORMS:
            problems.append(f"finetune.answer={finetune.answer!r}: expected one of {ANSWER_FORMS}")
        if finetune.vision.method not in VISION_METHODS:
            problems.append(f"finetune.vision.method={finetune.vision.method!r}: expected one of {VISION_METHODS}")
        problems += [f"finetune.{key}={finetune[key]!r}: expected True or False"
                     for key in ("enabled", "remat", "export_peft") if not isinstance(finetune[key], bool)]
        if not isinstance(finetune.vision.enabled, bool):
            problems.append(f"finetune.vision.enabled={finetune.vision.enabled!r}: expected True or False")
        if problems:
            raise ConfigError("invalid finetune section: " + "; ".join(problems))
        vision = VisionSettings(finetune.vision.enabled, finetune.vision.method, lora_of(finetune.vision.lora),
                                schedule_of(finetune.vision.train))
        return cls(finetune.enabled, finetune.answer, finetune.remat, finetune.export_peft, lora_of(finetune.lora),
                   schedule_of(finetune.train), vision)
