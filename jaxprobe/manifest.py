"""``<workdir>/manifest.json``: resolved config, versions, devices, per-stage timings, counts, skipped inputs."""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import jax

MANIFEST_FILE = "manifest.json"
PACKAGES = ("jaxprobe", "jax", "flax", "optax", "transformers", "tensorflow-datasets", "numpy")


def versions() -> dict[str, str]:
    found = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def read_manifest(workdir: str | Path) -> dict[str, Any]:
    path = Path(workdir) / MANIFEST_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


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
