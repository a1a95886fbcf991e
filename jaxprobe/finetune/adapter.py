"""A finished LoRA adapter on disk, and the fine-tuned model it makes of its base checkpoint.

Layout of an adapter directory (``<workdir>/finetune/adapter``)::

    adapter.json   {"format": 1, "kind": "lora", "rank", "alpha", "dropout", "targets", "kernels",
                    "base": {"model_type", "fingerprint"}, "answer", "training": {...}, "fingerprint"}
    lora/          the adapter tree (orbax): <module path>/{a, b, scale, dropout}

The directory is written beside its final place and renamed into it, so it is either complete or absent.
``model.adapter=PATH`` folds the adapter into the base params after loading (``lora.merge_lora``), so
extraction, generation and the probe sites run on the fine-tuned model unchanged; the adapter's content enters
the feature store's fingerprint. An adapter is refused on any checkpoint but the one it was trained on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util

from jaxprobe.errors import CheckpointError, ConfigError
from jaxprobe.finetune.lora import adapted_kernels, joined, merge_lora

FORMAT = 1
META_FILE = "adapter.json"
TREE_DIR = "lora"
SAMPLE_BYTES = 2**20  # bytes hashed from each end of every weight file


def base_fingerprint(checkpoint_dir: str | Path) -> str:
    """Content fingerprint of a checkpoint (config.json, and the header plus the first and last MiB of every
    safetensors file): survives copies and re-downloads, unlike mtimes, and changes with the weights."""
    digest = hashlib.sha256()
    checkpoint_dir = Path(checkpoint_dir)
    for path in [*sorted(checkpoint_dir.glob("*.safetensors")), checkpoint_dir / "config.json"]:
        size = path.stat().st_size
        with path.open("rb") as handle:
            digest.update(f"{path.name}\0{size}\0".encode())
            digest.update(handle.read(SAMPLE_BYTES))
            handle.seek(max(size - SAMPLE_BYTES, 0))
            digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()[:16]


def adapter_fingerprint(path: str | Path) -> str:
    """Hash of every file of an adapter directory (adapters are small): enters the feature fingerprint."""
    read_meta(path)  # refuse a path that is not an adapter before any work
    path = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path)}\0".encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def read_meta(path: str | Path) -> dict[str, Any]:
    meta_path = Path(path) / META_FILE
    if not meta_path.is_file():
        raise CheckpointError(f"{path} is not a jaxprobe adapter (no {META_FILE}); give the adapter directory "
                              "that `jaxprobe finetune` wrote, <workdir>/finetune/adapter")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT or meta.get("kind") != "lora":
        raise CheckpointError(f"{meta_path} is an adapter of format {meta.get('format')} / kind {meta.get('kind')}; "
                              f"this jaxprobe reads format {FORMAT} LoRA adapters")
    return meta


def write_adapter(path: Path, lora: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``lora`` and ``meta`` as an adapter directory (atomically). An existing adapter of the same training
    (``meta["fingerprint"]``) is kept as it is; one of another training is never replaced."""
    import orbax.checkpoint as ocp

    if path.exists():
        existing = read_meta(path)
        if existing.get("fingerprint") != meta["fingerprint"]:
            raise ConfigError(f"{path} holds an adapter of another fine-tuning run; use another work directory "
                              f"or delete {path}")
        return path
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    host = {"/".join(key): np.asarray(value) for key, value in traverse_util.flatten_dict(lora).items()}
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save((temporary / TREE_DIR).absolute(), host)
    checkpointer.wait_until_finished()
    (temporary / META_FILE).write_text(json.dumps({"format": FORMAT, "kind": "lora", **meta}, indent=1))
    os.replace(temporary, path)
    return path


def read_adapter(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(meta, adapter tree as numpy) of an adapter directory."""
    import orbax.checkpoint as ocp

    meta = read_meta(path)
    flat = ocp.StandardCheckpointer().restore((Path(path) / TREE_DIR).absolute())
    tree = traverse_util.unflatten_dict({tuple(key.split("/")): np.asarray(value) for key, value in flat.items()})
    return meta, tree


def check_fits(meta: dict[str, Any], lora: dict[str, Any], params: dict[str, Any], model_type: str,
               fingerprint: str, source: str) -> None:
    """Refuse an adapter trained on another checkpoint, or whose shapes do not fit these params."""
    base = meta.get("base", {})
    if base.get("model_type") != model_type or base.get("fingerprint") != fingerprint:
        raise CheckpointError(f"the adapter {source} was trained on a {base.get('model_type')} checkpoint with "
                              f"fingerprint {base.get('fingerprint')}, not on this {model_type} checkpoint "
                              f"({fingerprint}); use the checkpoint it was trained on, or fine-tune this one")
    flat, adapters = traverse_util.flatten_dict(params), traverse_util.flatten_dict(lora)
    for kernel in adapted_kernels(lora):
        shape = flat[kernel].shape if kernel in flat else None
        a, b = adapters[(*kernel[:-1], "a")].shape, adapters[(*kernel[:-1], "b")].shape
        if shape is None or a[:-1] != shape[:-1] or b[:-2] != shape[:-2] or b[-1] != shape[-1]:
            raise CheckpointError(f"the adapter {source} does not fit {joined(kernel)} (kernel {shape}, A {a}, B {b})")


def with_adapter(loaded: Any, path: str | Path) -> Any:
    """``loaded`` (a ``LoadedModel``) with the adapter at ``path`` merged into its params."""
    meta, lora = read_adapter(path)
    model_type = json.loads((Path(loaded.checkpoint) / "config.json").read_text()).get("model_type")
    check_fits(meta, lora, loaded.params, model_type, base_fingerprint(loaded.checkpoint), str(path))
    return dataclasses.replace(loaded, params=merge_lora(loaded.params, lora))
