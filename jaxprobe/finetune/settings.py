"""The config's ``finetune`` section as dataclasses (the defaults live in configs/demo.py only).

The valid range of every value is a rule in ``jaxprobe.config.RULES`` (checked when the config is loaded, before
any model is loaded); the choices those rules accept are named here, next to the code that reads them. This
module imports no jax, so the config checker can import it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import ml_collections

ANSWER_FORMS = ("letter", "letter_and_name")  # what the model is taught to answer (generation parses both)
MONITORS = ("accuracy", "loss", "last")  # what early stopping and the kept weights read on `val` ("last": none)
VISION_METHODS = ("full", "lora")


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    """Rank, alpha, dropout and the kernels to adapt (regexes fully matching '/'-joined param paths); the
    defaults are the config's (configs/demo.py, ``finetune.lora``)."""

    rank: int
    alpha: float
    dropout: float
    targets: tuple[str, ...]

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


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
        """The ``finetune`` section of a config that ``jaxprobe.config.validate_config`` accepted."""
        vision = VisionSettings(finetune.vision.enabled, finetune.vision.method, lora_of(finetune.vision.lora),
                                schedule_of(finetune.vision.train))
        return cls(finetune.enabled, finetune.answer, finetune.remat, finetune.export_peft, lora_of(finetune.lora),
                   schedule_of(finetune.train), vision)
