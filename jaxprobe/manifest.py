"""``<workdir>/manifest.json``: resolved config, versions, devices, per-stage timings, counts, skipped inputs."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import jax

from jaxprobe.errors import ConfigError
from jaxprobe.workdir import MANIFEST_FILE

PACKAGES = ("jaxprobe", "jax", "flax", "optax", "transformers", "tensorflow-datasets", "numpy")


# Features do not depend on the split (it is a column of the store's index), so it belongs to the probe stage.
STAGE_SECTIONS = {"extract": ("data", "model", "capture"), "probe": ("split", "probe"),
                  "score": ("split", "probe", "scoring", "diagnosis")}


# Keys that choose which sites a stage works on or how it streams them, not what any result is: a run over a
# subset (`jaxprobe probe --sites`) or with another memory budget leaves the stage's outputs valid for all.
RESULT_NEUTRAL_KEYS = {"probe": ("sites", "memory_gb")}


def settings_hash(config, stage: str) -> str:
    """Hash of the config sections a stage depends on: a stage is up to date only if this is unchanged."""
    sections = {key: {name: value for name, value in config[key].to_dict().items()
                      if name not in RESULT_NEUTRAL_KEYS.get(key, ())} for key in STAGE_SECTIONS[stage]}
    return hashlib.sha256(json.dumps(sections, sort_keys=True, default=str).encode()).hexdigest()[:16]


def versions() -> dict[str, str]:
    found = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def read_manifest(workdir: str | Path) -> dict[str, Any]:
    """The manifest as a dict ({} when there is none); a damaged one is a one-line error, not a traceback."""
    path = Path(workdir) / MANIFEST_FILE
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path} is damaged ({error}); move it aside (the stages then rerun and rewrite "
                          "it)") from error
    if not isinstance(manifest, dict):
        raise ConfigError(f"{path} is not a JSON object; move it aside (the stages then rerun and rewrite it)")
    return manifest


def record_stage(workdir: str | Path, stage: str, config_dict: dict, payload: dict[str, Any]) -> None:
    """Merge one stage's facts into the manifest (written atomically)."""
    workdir = Path(workdir)
    manifest = read_manifest(workdir)
    manifest.update({"config": config_dict, "versions": versions(), "python": platform.python_version(),
                     "devices": [str(d) for d in jax.devices()], "processes": jax.process_count()})
    manifest.setdefault("stages", {})[stage] = payload
    temporary = workdir / (MANIFEST_FILE + ".tmp")
    temporary.write_text(json.dumps(manifest, indent=1, default=str))
    os.replace(temporary, workdir / MANIFEST_FILE)
