"""The files of a run's work directory, named in one place (DESIGN.md: "Work directory of a run"), and the lock
that keeps two jaxprobe processes from writing into one directory at once.

The lock is an advisory ``flock`` on ``<dir>/.jaxprobe.lock``: the operating system releases it when its
process ends, however it ends, so a killed run never leaves a stale lock behind. The file names the holder (pid,
command, start time) so a refusal can say who holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from jaxprobe.errors import ConfigError

MANIFEST_FILE = "manifest.json"  # resolved config, versions, devices, per-stage facts
SPLIT_FILE = "split.json"  # the train/val/test assignment by sample id
FEATURES_DIR = "features"  # the FeatureStore (jaxprobe.features)
PROBES_FILE = "probes.parquet"  # one row per site x kind x lambda x fold
SCORES_FILE = "scores.json"  # FHS profile, diagnosis, calibration, the curve
SUMMARY_FILE = "summary.parquet"  # one row per run, for comparisons
REPORT_FILE = "report.html"
# Fine-tuning (jaxprobe.finetune): `jaxprobe finetune` writes FINETUNE_DIR (adapter, PEFT export, checkpoints,
# summary); a run's visual-representation verdict compares its vision probes with VISION_BASELINE_FILE when present;
# `jaxprobe run` with finetune.enabled writes BEFORE_DIR and AFTER_DIR (two ordinary runs) and BEFORE_AFTER_FILE.
FINETUNE_DIR = "finetune"
VISION_BASELINE_FILE = "vision_baseline.json"
BEFORE_DIR, AFTER_DIR = "before", "after"
BEFORE_AFTER_FILE = "before_after.json"


LOCK_FILE = ".jaxprobe.lock"  # held (flock) while a command writes into the directory


def _acquire(path: Path, wait: bool):
    """An open handle holding an exclusive flock on ``path``, or None when another process holds it."""
    while True:
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            return None
        try:
            same = os.fstat(handle.fileno()).st_ino == path.stat().st_ino
        except FileNotFoundError:  # the holder removed the file as it let go: lock the new one instead
            same = False
        if same:
            return handle
        handle.close()


@contextlib.contextmanager
def directory_lock(directory: str | Path, command: str, wait: bool = False, log=print) -> Iterator[None]:
    """Hold ``<directory>/.jaxprobe.lock`` for the duration; while another process holds it, refuse (or, with
    ``wait``, say so and wait for it)."""
    directory = Path(directory)
    path = directory / LOCK_FILE
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = _acquire(path, wait=False)
        if handle is None and wait:
            log(f"waiting for another jaxprobe process to finish with {directory} ({_holder(path)})")
            handle = _acquire(path, wait=True)
    except OSError as error:
        raise ConfigError(f"cannot lock {directory} ({error}); is it writable? choose another directory") from error
    if handle is None:
        raise ConfigError(f"{directory} is in use by another jaxprobe process ({_holder(path)}); wait for it to "
                          "finish, or give this run another work directory")
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, `jaxprobe {command}` since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        handle.close()  # closing releases the flock


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "starting"
    except OSError:
        return "unknown"
