"""Fill an abstract Flax params tree from a checkpoint through a family's ``KeyMap``.

First the whole checkpoint is planned from its headers (every tensor mapped, every shape checked, every leaf and
every row of a stacked leaf filled exactly once), so a wrong or incomplete checkpoint fails before any weight is
read. Then leaves are built one at a time: each device's shard is read straight from the file
(``jax.make_array_from_callback``, so a host of a multi-host run reads only its own slices), and the rows of a
stacked (scanned-layer) leaf are written into a preallocated sharded buffer by a donated update. Host memory
holds the growing params plus about one tensor, never a second copy of the model.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import traverse_util
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from jaxprobe.errors import CheckpointError
from jaxprobe.weights.keymap import KeyMap, ParamPath, Transform
from jaxprobe.weights.reader import TensorInfo, checkpoint_headers, read_slice

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


@dataclasses.dataclass(frozen=True)
class Piece:
    """One checkpoint tensor filling a leaf (``layer`` None) or one row of a stacked leaf."""

    name: str
    file: Path
    info: TensorInfo
    transform: Transform
    layer: int | None

    @property
    def where(self) -> str:
        return f"tensor {self.name!r} in {self.file}"


def _plan_piece(piece: Piece, path: ParamPath, expected: Mapping[ParamPath, Any],
                filled: dict[ParamPath, dict[int | None, str]]) -> None:
    """Check one piece against its leaf (known, right shape, row in range, not filled twice) and record it."""
    if path not in expected:
        raise CheckpointError(f"{piece.where} maps to unknown parameter {_dotted(path)}")
    want = tuple(expected[path].shape)
    if piece.layer is not None:
        if not 0 <= piece.layer < want[0]:
            raise CheckpointError(f"{piece.where} is layer {piece.layer}, but the config has {want[0]} layers for "
                                  f"{_dotted(path)}: checkpoint and config.json disagree")
        want = want[1:]
    got = piece.transform.shape(piece.info.shape)
    if got != want:
        raise CheckpointError(f"{piece.where} has shape {piece.info.shape} -> {got} for {_dotted(path)}, but the "
                              f"config implies {want}: checkpoint and config.json disagree")
    rows = filled.setdefault(path, {})
    clash = [where for layer, where in rows.items() if piece.layer is None or layer in (None, piece.layer)]
    if clash:
        raise CheckpointError(f"{piece.where} fills {_dotted(path)}, already filled by {clash[0]}")
    rows[piece.layer] = piece.where


def plan_load(directory: str | Path, keymap: KeyMap, abstract_params: Mapping[str, Any]) -> dict[ParamPath, list]:
    """Every leaf's pieces, checked against the abstract params from the headers alone (no tensor is read)."""
    expected = traverse_util.flatten_dict(dict(abstract_params))
    plan: dict[ParamPath, list[Piece]] = {}
    filled: dict[ParamPath, dict[int | None, str]] = {}
    for file, infos in checkpoint_headers(directory).items():
        for name, info in infos.items():
            targets = keymap.targets(name)
            if targets is None:
                raise CheckpointError(f"unexpected tensor {name!r} in {file}: the config describes no such weight. "
                                      "Is config.json from the same model as the weights?")
            for target in targets:
                piece = Piece(name, file, info, target.transform, target.layer)
                _plan_piece(piece, target.path, expected, filled)
                plan.setdefault(target.path, []).append(piece)
    missing = [_dotted(p) for p in expected if p not in plan]
    for path, pieces in plan.items():
        layers = sorted(piece.layer for piece in pieces if piece.layer is not None)
        if layers and layers != list(range(expected[path].shape[0])):
            absent = sorted(set(range(expected[path].shape[0])) - set(layers))
            missing.append(f"{_dotted(path)} layers {absent[:5]}")
    if missing:
        raise CheckpointError(f"checkpoint {directory} lacks {len(missing)} parameter(s) the config needs, e.g. "
                              f"{sorted(missing)[:5]}; the checkpoint is incomplete or belongs to a different config")
    return plan


def _leaf_dtype(info: TensorInfo, dtype: np.dtype) -> np.dtype:
    """Floating tensors take the policy dtype; integer/bool buffers (rare, e.g. position ids) keep theirs."""
    return info.dtype if np.issubdtype(info.dtype, np.integer) or info.dtype == np.bool_ else dtype


def _from_file(piece: Piece, shape: tuple[int, ...], sharding: jax.sharding.Sharding, dtype: np.dtype) -> jax.Array:
    """The array of one piece, each addressable shard read from the file on its own."""
    return jax.make_array_from_callback(
        shape, sharding, lambda index: read_slice(piece.file, piece.info, piece.transform, index, dtype))


@functools.cache
def block_setter(sharding: jax.sharding.Sharding, one_row: bool = False):
    """``(buffer, block, start) -> buffer`` with rows ``start:start + len(block)`` replaced (``one_row``: the block
    is a single row without the leading axis), in place (the buffer is donated): how a stacked leaf is filled layer
    by layer here and a cached leaf block by block on restore, without a second copy of the leaf."""
    def update(buffer: jax.Array, block: jax.Array, start: jax.Array) -> jax.Array:
        return jax.lax.dynamic_update_slice_in_dim(buffer, block[None] if one_row else block, start, 0)

    return jax.jit(update, donate_argnums=0, out_shardings=sharding)


def allocate(shape: tuple[int, ...], dtype: np.dtype, sharding: jax.sharding.Sharding) -> jax.Array:
    """A zero leaf laid out as ``sharding`` (each device allocates only its shard), to be filled by
    ``block_setter``."""
    return jax.jit(lambda: jnp.zeros(shape, dtype), out_shardings=sharding)()


def rows_sharding(sharding: jax.sharding.Sharding, keep_rank: bool = False) -> jax.sharding.Sharding:
    """The sharding of some rows of a leaf: the leaf's with axis 0 unsharded (a stacked leaf's layer axis never
    is), either without that axis (one layer) or with it (a block of rows)."""
    if not isinstance(sharding, NamedSharding):
        return sharding
    spec = tuple(sharding.spec)[1:]
    return NamedSharding(sharding.mesh, PartitionSpec(None, *spec) if keep_rank else PartitionSpec(*spec))


def _stacked(pieces: list[Piece], shape: tuple[int, ...], sharding: jax.sharding.Sharding,
             dtype: np.dtype) -> jax.Array:
    buffer = allocate(shape, dtype, sharding)
    setter, row_sharding = block_setter(sharding, one_row=True), rows_sharding(sharding)
    for piece in sorted(pieces, key=lambda p: p.layer):
        buffer = setter(buffer, _from_file(piece, shape[1:], row_sharding, dtype), piece.layer)
    return buffer


def load_params(directory: str | Path, keymap: KeyMap, abstract_params: Mapping[str, Any],
                dtype: DTypeLike = np.float32, sharding_for: ShardingFor | None = None) -> dict[str, Any]:
    """Read ``directory`` into a params tree shaped like ``abstract_params`` (``jax.eval_shape`` of the model's
    ``init``); ``sharding_for(path)`` places each leaf (``None``: the first local device)."""
    dtype = resolve_dtype(dtype)
    expected = traverse_util.flatten_dict(dict(abstract_params))
    plan = plan_load(directory, keymap, abstract_params)
    default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    filled = {}
    for path, pieces in tqdm(plan.items(), desc="loading weights", unit="param", disable=None, leave=False):
        shape = tuple(expected[path].shape)
        sharding = (sharding_for(path) if sharding_for else None) or default
        leaf_dtype = _leaf_dtype(pieces[0].info, dtype)
        if pieces[0].layer is None:
            filled[path] = _from_file(pieces[0], shape, sharding, leaf_dtype)
        else:
            filled[path] = _stacked(pieces, shape, sharding, leaf_dtype)
    return traverse_util.unflatten_dict(filled)
