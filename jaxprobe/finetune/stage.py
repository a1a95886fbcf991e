"""``jaxprobe finetune CONFIG``: LoRA SFT and the vision-tower baseline on the run's split, into
``<workdir>/finetune/``; and ``jaxprobe run`` with ``finetune.enabled`` (before -> fine-tune -> after).

Layout of ``<workdir>/finetune/``::

    lora/                   orbax checkpoints of the LoRA SFT (resumable; the last two are kept)
    adapter/                the kept adapter (adapter.json + lora/): model.adapter=<workdir>/finetune/adapter
    peft/                   the same adapter for PyTorch: adapter_model.safetensors + adapter_config.json
    vision/                 orbax checkpoints of the vision-tower baseline
    vision_baseline.json    the baseline's accuracies (also written to <workdir>/vision_baseline.json)
    finetune.json           both runs: settings fingerprint, losses, evaluations, kept step, accuracies

A part whose results exist for the same settings (fingerprint) is skipped without loading the model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections

from jaxprobe import data
from jaxprobe.capture.extract import check_writable, feature_settings, plan_rows, resolve_checkpoint, store_index
from jaxprobe.capture.generate import eos_token_ids
from jaxprobe.capture.images import check_resolution, data_sources, image_loader
from jaxprobe.errors import ConfigError
from jaxprobe.families.loading import load_model
from jaxprobe.families.registry import family_of
from jaxprobe.features import split_fingerprint
from jaxprobe.finetune.adapter import base_fingerprint, write_adapter
from jaxprobe.finetune.lora import adapted_kernels, joined
from jaxprobe.finetune.peft import export_peft
from jaxprobe.finetune.rows import Rows
from jaxprobe.finetune.settings import FinetuneSettings
from jaxprobe.finetune.sft import LoraRun, prepare_lora, train_lora
from jaxprobe.finetune.vision import SOURCE, VisionRun, train_vision
from jaxprobe.manifest import record_stage
from jaxprobe.models.layers import layer_name
from jaxprobe.parallel import make_mesh
from jaxprobe.pipeline import data_dir_of, prepare_data
from jaxprobe.workdir import FINETUNE_DIR, VISION_BASELINE_FILE

LORA_DIR, VISION_DIR, ADAPTER_DIR, PEFT_DIR = "lora", "vision", "adapter", "peft"
SUMMARY = "finetune.json"


@dataclasses.dataclass(frozen=True)
class Context:
    """What both trainings read: the rows as extraction feeds them, and the checkpoint (not yet loaded)."""

    config: ml_collections.ConfigDict
    rows: Rows
    checkpoint: Path
    family: Any
    processor: Any
    common: dict[str, Any]  # what every result depends on (base weights, data, split, prompt, image sizes)

    @property
    def out(self) -> Path:
        return Path(self.config.workdir) / FINETUNE_DIR


def data_context(config: ml_collections.ConfigDict) -> Context:
    """Dataset, split, checkpoint and rows (the model is not loaded)."""
    workdir = Path(config.workdir)
    check_writable(workdir)
    check_resolution(config.capture.resolution, config.capture.bucket_step)
    prepared, (checkpoint, _) = prepare_data(config), resolve_checkpoint(config.model, workdir)
    family = family_of(checkpoint)
    processor = family.processor(checkpoint)
    builder = data.prepared_builder(config.data.name, data_dir_of(config), config.data.config)
    index, sizes = plan_rows(config, store_index(prepared), processor, builder)
    rows = Rows(index, sizes, image_loader(data_sources(builder), index, sizes), prepared.summary.class_names)
    settings = feature_settings(config, checkpoint)
    common = {"base": base_fingerprint(checkpoint), "dtype": config.model.dtype, "data": settings["data"],
              "split": split_fingerprint(rows.index), "question": config.capture.question,
              "resolution": config.capture.resolution, "bucket_step": config.capture.bucket_step}
    return Context(config, rows, checkpoint, family, processor, common)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomic, and left untouched when the content is the same (its mtime tells the run what changed)."""
    text = json.dumps(payload, indent=1, default=float)
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _record(progress: Any) -> dict[str, Any]:
    """A training's record for finetune.json."""
    return {"micro_batches": progress.micro, "losses": progress.losses, "evaluations": progress.evaluations,
            "kept": progress.best, "stopped_early": progress.stopped_early}


def lora_part(context: Context, settings: FinetuneSettings, loaded: Any, fingerprint: str,
              log: Callable[[str], None]) -> dict[str, Any]:
    """Train (or resume) the LoRA SFT, write the adapter and its PEFT export; the summary's ``lora`` entry."""
    config, out = context.config, context.out
    mesh = make_mesh(config.mesh.data, config.mesh.model)
    eos = eos_token_ids(context.checkpoint, context.processor.tokenizer)
    setup = prepare_lora(loaded, context.processor, context.rows, config.capture.question, settings.lora,
                         settings.schedule, settings.answer, eos, settings.remat, mesh)
    run: LoraRun = train_lora(setup, settings.schedule, out / LORA_DIR, fingerprint, log)
    spec = settings.lora
    meta = {"rank": spec.rank, "alpha": spec.alpha, "dropout": spec.dropout, "targets": list(spec.targets),
            "kernels": [joined(kernel) for kernel in adapted_kernels(run.lora)],
            "base": {"model_type": config_model_type(context.checkpoint), "fingerprint": context.common["base"],
                     "checkpoint": str(config.model.checkpoint)},
            "answer": {"form": settings.answer, "texts": list(run.targets.texts)},
            "training": {"kept": run.progress.best, "before": run.before, "after": run.after},
            "fingerprint": fingerprint}
    write_adapter(out / ADAPTER_DIR, run.lora, meta)
    if settings.export_peft:
        export_peft(out / PEFT_DIR, run.lora, meta, context.checkpoint, context.family.keymap(loaded.config),
                    str(config.model.checkpoint))
    log(f"lora: train accuracy {run.before['train']['accuracy']:.3f} -> {run.after['train']['accuracy']:.3f}, val "
        f"{run.before['val']['accuracy']:.3f} -> {run.after['val']['accuracy']:.3f}; adapter {out / ADAPTER_DIR}")
    return {"fingerprint": fingerprint, "adapter": str(out / ADAPTER_DIR),
            "peft": str(out / PEFT_DIR) if settings.export_peft else None, "before": run.before,
            "after": run.after, **_record(run.progress)}


def vision_part(context: Context, settings: FinetuneSettings, loaded: Any, fingerprint: str,
                log: Callable[[str], None]) -> dict[str, Any]:
    """Train (or resume) the vision-tower baseline; its ``vision_baseline.json`` record."""
    config = context.config
    mesh = make_mesh(config.mesh.data, config.mesh.model)
    run: VisionRun = train_vision(loaded, context.processor, context.rows, config.capture.question, settings.vision,
                                  mesh, context.out / VISION_DIR, fingerprint, log)
    depth = loaded.config.vision.depth
    log(f"vision baseline ({settings.vision.method}): test accuracy {run.accuracy['test']:.3f}")
    return {"kind": "vision_tower_baseline", "accuracy": run.accuracy["test"], "split": "test",
            "test_rows": len(context.rows.of("test")), "accuracies": run.accuracy, "loss": run.loss,
            "split_fingerprint": context.common["split"],
            "method": settings.vision.method, "site": f"vision.{layer_name(depth - 1, depth)}",
            "source": SOURCE, "checkpoint": str(config.model.checkpoint), "fingerprint": fingerprint,
            **_record(run.progress)}


def config_model_type(checkpoint: Path) -> str | None:
    return json.loads((checkpoint / "config.json").read_text()).get("model_type")


def fingerprints(context: Context, settings: FinetuneSettings) -> dict[str, str]:
    lora = settings.schedule.fingerprint({**context.common, "lora": dataclasses.asdict(settings.lora),
                                          "answer": settings.answer})
    vision = settings.vision.schedule.fingerprint({**context.common, "method": settings.vision.method,
                                                   "lora": dataclasses.asdict(settings.vision.lora)})
    return {"lora": lora, "vision": vision}


def baseline_record(vision: dict[str, Any]) -> dict[str, Any]:
    """``vision_baseline.json``: the vision part of finetune.json without its per-step history."""
    return {key: value for key, value in vision.items() if key not in ("losses", "evaluations")}


def register_baseline(workdir: Path, vision: dict[str, Any]) -> None:
    """Make the baseline the reference of the run in ``workdir`` (scoring reads <workdir>/vision_baseline.json)."""
    _write_json(Path(workdir) / VISION_BASELINE_FILE, baseline_record(vision))


def run_finetune(config: ml_collections.ConfigDict, lora: bool = True, vision: bool = True,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """The fine-tune stage; returns ``finetune.json``'s content. Parts up to date are skipped."""
    started = time.perf_counter()
    settings = FinetuneSettings.from_config(config.finetune)
    if jax.process_count() > 1:
        raise ConfigError("jaxprobe finetune runs in one process; start it without JAX_COORDINATOR_ADDRESS / a "
                          "multi-process launcher (the mesh still spans every local device)")
    if config.model.adapter:
        raise ConfigError(f"model.adapter={config.model.adapter!r}: fine-tuning starts from the base checkpoint; "
                          "unset model.adapter")
    context = data_context(config)
    summary = _read_json(context.out / SUMMARY)
    wanted = fingerprints(context, settings)
    parts = {"lora": (lora, lora_part), "vision": (vision and settings.vision.enabled, vision_part)}
    todo = [name for name, (asked, _) in parts.items()
            if asked and summary.get(name, {}).get("fingerprint") != wanted[name]]
    for name in (name for name, (asked, _) in parts.items() if asked and name not in todo):
        log(f"finetune {name}: up to date ({context.out})")
    if todo:
        loaded = load_model(context.checkpoint, config.model.dtype, make_mesh(config.mesh.data, config.mesh.model),
                            config.model.cache_dir if config.model.cache else False)
        for name in todo:
            summary[name] = parts[name][1](context, settings, loaded, wanted[name], log)
            _write_json(context.out / SUMMARY, summary)
    if "vision" in summary and vision and settings.vision.enabled:
        _write_json(context.out / VISION_BASELINE_FILE, baseline_record(summary["vision"]))
        register_baseline(Path(config.workdir), summary["vision"])
    record_stage(config.workdir, "finetune", config.to_dict(), {
        "seconds": round(time.perf_counter() - started, 2), "trained": todo, "fingerprints": wanted,
        "checkpoint": str(context.checkpoint)})
    return summary
