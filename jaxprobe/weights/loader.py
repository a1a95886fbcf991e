"""Fill an abstract Flax params tree from a checkpoint through a family's ``KeyMap``.

Each tensor is read, transformed, cast and placed (``jax.device_put`` with the caller's sharding) before the
next one is read, so host memory holds the growing params tree plus about one tensor, never a second copy of
the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import ml_dtypes
import numpy as np
from flax import traverse_util

from jaxprobe.errors import CheckpointError
from jaxprobe.weights.keymap import KeyMap, ParamPath
from jaxprobe.weights.reader import iter_tensors

ShardingFor = Callable[[ParamPath], jax.sharding.Sharding | None]
DTypeLike = str | np.dtype | type | Any

DTYPE_NAMES: dict[str, np.dtype] = {
    "float32": np.dtype(np.float32),
    "fp32": np.dtype(np.float32),
    "f32": np.dtype(np.float32),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "bf16": np.dtype(ml_dtypes.bfloat16),
}


def resolve_dtype(dtype: DTypeLike) -> np.dtype:
    """The parameter dtype policy: ``"float32"``/``"bfloat16"`` (or aliases, numpy and jnp dtypes) -> np.dtype."""
    if isinstance(dtype, str):
        if dtype.lower() not in DTYPE_NAMES:
            raise CheckpointError(f"unsupported parameter dtype {dtype!r}; choose one of {sorted(DTYPE_NAMES)}")
        return DTYPE_NAMES[dtype.lower()]
    resolved = np.dtype(dtype)
    if resolved not in set(DTYPE_NAMES.values()):
        raise CheckpointError(f"unsupported parameter dtype {resolved}; use float32 or bfloat16")
    return resolved


def dtype_name(dtype: DTypeLike) -> str:
    """Canonical name (``"float32"``/``"bfloat16"``) used in cache keys and manifests."""
    return resolve_dtype(dtype).name


def _dotted(path: ParamPath) -> str:
    return "/".join(path)


def _cast(value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Floating tensors take the policy dtype; integer/bool buffers (rare, e.g. position ids) keep theirs."""
    if np.issubdtype(value.dtype, np.integer) or value.dtype == np.bool_:
        return value
    return np.asarray(value, dtype=dtype)


def load_params(
    directory: str | Path,
    keymap: KeyMap,
    abstract_params: Mapping[str, Any],
    dtype: DTypeLike = np.float32,
    sharding_for: ShardingFor | None = None,
) -> dict[str, Any]:
    """Read ``directory`` tensor by tensor into a params tree shaped like ``abstract_params``.

    ``abstract_params`` is the ``params`` collection of ``jax.eval_shape(model.init, ...)``; every leaf must be
    filled exactly once with the expected shape, else ``CheckpointError`` names the tensor and the file.
    ``sharding_for(path)`` gives each leaf's placement (``None``: the default device).
    """
    dtype = resolve_dtype(dtype)
    expected = traverse_util.flatten_dict(dict(abstract_params))
    filled: dict[ParamPath, jax.Array] = {}
    source: dict[ParamPath, str] = {}
    for name, file, tensor in iter_tensors(directory):
        targets = keymap.targets(name)
        if targets is None:
            raise CheckpointError(
                f"unexpected tensor {name!r} in {file}: the config describes no such weight. Is config.json from "
                "the same model as the weights?"
            )
        for target in targets:
            where = f"tensor {name!r} in {file}"
            if target.path not in expected:
                raise CheckpointError(f"{where} maps to unknown parameter {_dotted(target.path)}")
            if target.path in filled:
                raise CheckpointError(f"{where} fills {_dotted(target.path)}, already filled by {source[target.path]}")
            value = target.transform(tensor)
            want = tuple(expected[target.path].shape)
            if tuple(value.shape) != want:
                raise CheckpointError(
                    f"{where} has shape {tuple(tensor.shape)} -> {tuple(value.shape)} for "
                    f"{_dotted(target.path)}, but the config implies {want}: checkpoint and config.json disagree"
                )
            sharding = sharding_for(target.path) if sharding_for else None
            filled[target.path] = jax.device_put(_cast(value, dtype), sharding)
            source[target.path] = f"{name!r} in {file}"
            del value
        del tensor
    missing = sorted(_dotted(p) for p in expected if p not in filled)
    if missing:
        raise CheckpointError(
            f"checkpoint {directory} lacks {len(missing)} parameter(s) the config needs, e.g. {missing[:5]}; "
            "the checkpoint is incomplete or belongs to a different config"
        )
    return traverse_util.unflatten_dict(filled)
