"""``jaxprobe run`` with ``finetune.enabled=True``: the base model probed, fine-tuned, and probed again.

Layout of the work directory ``W``::

    W/datasets/, W/checkpoint/   the dataset (and a tiny:... checkpoint), built once and shared by both runs
    W/finetune/                  the fine-tune stage (jaxprobe.finetune.stage): adapter, PEFT export, baseline
    W/vision_baseline.json       the vision-tower baseline, also copied into both runs (their visual reference)
    W/before/                    an ordinary run of the base model (features/, probes.parquet, scores.json, ...)
    W/after/                     an ordinary run with model.adapter=W/finetune/adapter
    W/report.html, overlay.png, profiles.png, before_after.json   the two runs side by side

Order: vision baseline -> before -> LoRA SFT -> after -> report; every step is skipped when up to date, and
every run resumes where it stopped.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import ml_collections

from jaxprobe.capture.extract import resolve_checkpoint
from jaxprobe.finetune.stage import ADAPTER_DIR, register_baseline, run_finetune
from jaxprobe.pipeline import data_dir_of
from jaxprobe.workdir import AFTER_DIR, BEFORE_DIR, FINETUNE_DIR


def sub_config(config: ml_collections.ConfigDict, workdir: Path, checkpoint: Path,
               adapter: Path | None) -> ml_collections.ConfigDict:
    """One of the two ordinary runs: its own work directory, the shared dataset and checkpoint."""
    sub = copy.deepcopy(config)
    sub.workdir = str(workdir)
    sub.data.data_dir = str(data_dir_of(config))
    sub.model.checkpoint = str(checkpoint)
    sub.model.adapter = str(adapter) if adapter is not None else None
    sub.finetune.enabled = False
    return sub


def run_before_after(config: ml_collections.ConfigDict, log: Callable[[str], None] = print) -> Path:
    """Run every step that is not up to date; returns ``W/report.html``."""
    from jaxprobe.report.finetune import write_before_after
    from jaxprobe.run import run_all

    root = Path(config.workdir)
    root.mkdir(parents=True, exist_ok=True)
    checkpoint, _ = resolve_checkpoint(config.model, root)
    base = sub_config(config, root, checkpoint, None)
    runs = {BEFORE_DIR: root / BEFORE_DIR, AFTER_DIR: root / AFTER_DIR}
    summary = run_finetune(base, lora=False, log=log)
    for workdir in runs.values():
        if "vision" in summary:
            register_baseline(workdir, summary["vision"])
    run_all(sub_config(config, runs[BEFORE_DIR], checkpoint, None), log)
    summary = run_finetune(base, vision=False, log=log)
    run_all(sub_config(config, runs[AFTER_DIR], checkpoint, root / FINETUNE_DIR / ADAPTER_DIR), log)
    return write_before_after(root, runs, summary)
