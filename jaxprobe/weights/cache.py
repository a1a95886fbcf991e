"""Orbax cache of converted params, keyed by what they were converted from.

Converting a checkpoint (read, transpose, cast) costs far more than restoring an orbax checkpoint, so
``jaxprobe convert``, ``extract`` and ``run`` store the result and later loads reuse it while the source is
unchanged. The key is a fingerprint of the source files (names, sizes, modification times) plus the dtype and the
family's converter version, so a re-downloaded checkpoint, another dtype or a changed key map or module all miss
the cache instead of returning stale params.

An entry is written into a temporary directory and renamed into place in one step, so an interrupted or failed
conversion never leaves a half-written entry that a later load could mistake for a good one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
from flax import traverse_util

from jaxprobe import __version__
from jaxprobe.errors import CheckpointError
from jaxprobe.weights.hub import resolve_source
from jaxprobe.weights.keymap import KeyMap, ParamPath
from jaxprobe.weights.loader import (
    DTypeLike,
    ShardingFor,
    allocate,
    block_setter,
    dtype_name,
    load_params,
    rows_sharding,
)
from jaxprobe.weights.reader import read_config_json

PARAMS_DIR = "params"
MANIFEST_FILE = "manifest.json"
TMP_PREFIX = ".tmp-"
KEY_LENGTH = 16  # hex digits of sha256: collisions are not a practical concern for a handful of entries
CHUNK_BYTES = 64 * 2**20  # orbax's extra host copy while saving is bounded by one chunk
CHUNK_DIGITS = 5
BLOCK_MARK = "@rows"  # a leaf larger than a chunk is saved as row blocks named <leaf>@rows<first row>
FINGERPRINT_SUFFIXES = (".safetensors",)
FINGERPRINT_NAMES = ("config.json", "model.safetensors.index.json")
CACHE_DIR_ENV = "JAXPROBE_CACHE_DIR"
DEFAULT_CACHE_DIR = "~/.cache/jaxprobe/params"

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Converter:
    """What converting one checkpoint needs from its family: the key map, the abstract params tree and the
    converter version (e.g. ``qwen_vl/2``) that enters the cache key."""

    keymap: KeyMap
    abstract_params: Mapping[str, Any]
    version: str


ConverterFor = Callable[[Mapping[str, Any]], Converter]  # config.json -> Converter; the families registry


def default_cache_dir() -> Path:
    """``$JAXPROBE_CACHE_DIR`` if set, else ``~/.cache/jaxprobe/params``."""
    return Path(os.environ.get(CACHE_DIR_ENV, DEFAULT_CACHE_DIR)).expanduser()


@dataclasses.dataclass(frozen=True)
class CacheResult:
    """Params plus where they came from: ``hit`` is False when this call converted the source."""

    params: Params
    entry: Path
    manifest: dict[str, Any]
    hit: bool


def fingerprint(source_dir: str | Path) -> str:
    """Hash of the names, sizes and mtimes of the weight files and config; changes when any is replaced.

    Sizes and mtimes rather than content hashes: hashing tens of GB on every load would cost more than the
    conversion the cache saves, and any re-download or re-save updates the mtime.
    """
    source_dir = Path(source_dir)
    files = sorted(p for p in source_dir.iterdir() if p.suffix in FINGERPRINT_SUFFIXES or p.name in FINGERPRINT_NAMES)
    if not files:
        raise CheckpointError(f"{source_dir} holds no safetensors files or config.json to convert")
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()  # follows HF-cache symlinks to the blob, whose size/mtime are what matter
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_key(source_fingerprint: str, dtype: DTypeLike, converter_version: str) -> str:
    """Entry name: source fingerprint + dtype + the family's converter version (a key map or module change must
    invalidate entries)."""
    payload = f"{source_fingerprint}|{dtype_name(dtype)}|{converter_version}"
    return hashlib.sha256(payload.encode()).hexdigest()[:KEY_LENGTH]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temporaries(cache_root: Path) -> None:
    """Remove temporary entries left by conversions that were killed (their writer process is gone)."""
    if not cache_root.is_dir():
        return
    for tmp in cache_root.glob(f"{TMP_PREFIX}*"):
        pid = tmp.name.removeprefix(TMP_PREFIX).split("-")[0]
        if not pid.isdigit() or not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _checkpointer() -> Any:
    """Synchronous PyTree checkpointer without compression.

    Uncompressed because float weights barely compress and the compressor's buffers cost host memory: with
    compression, saving a chunk briefly needs about twice the chunk's size again.
    """
    import orbax.checkpoint as ocp

    return ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_compression=False))


def _block_key(name: str, start: int) -> str:
    return f"{name}{BLOCK_MARK}{start}"


def _parse_block(path: ParamPath) -> tuple[ParamPath, int] | None:
    """``(leaf path, first row)`` of a saved row block, ``None`` for a whole leaf."""
    name, mark, start = path[-1].rpartition(BLOCK_MARK)
    return ((*path[:-1], name), int(start)) if mark and start.isdigit() else None


def _pieces(params: Params, chunk_bytes: int) -> Iterator[tuple[ParamPath, jax.Array]]:
    """Every leaf, or, for a leaf larger than ``chunk_bytes``, its row blocks (axis 0, each at most a chunk or one
    row), sliced only when reached so that one block at a time exists beside the params.

    orbax copies a multi-GB array into a host buffer while saving it (measured: +3.5 GiB for a 7B model's stacked
    MLP kernel), so whole leaves would cost a copy of the largest one.
    """
    for path, leaf in traverse_util.flatten_dict(params).items():
        nbytes = leaf.size * leaf.dtype.itemsize
        if nbytes <= chunk_bytes or leaf.ndim == 0 or leaf.shape[0] < 2:
            yield path, leaf
            continue
        rows = max(1, chunk_bytes // (nbytes // leaf.shape[0]))
        for first in range(0, leaf.shape[0], rows):
            yield (*path[:-1], _block_key(path[-1], first)), leaf[first:first + rows]


def chunk_leaves(params: Params, chunk_bytes: int) -> Iterator[Params]:
    """Subtrees of at most ``chunk_bytes`` each (a block of one row larger than that gets a chunk of its own).

    orbax stages the arrays it saves in host buffers; saving chunk by chunk bounds that extra memory by one chunk
    instead of a second copy of the whole model. A generator, so blocks are sliced as their chunk is saved.
    """
    chunk: dict[ParamPath, jax.Array] = {}
    size = 0
    for path, piece in _pieces(params, chunk_bytes):
        nbytes = piece.size * piece.dtype.itemsize
        if chunk and size + nbytes > chunk_bytes:
            yield traverse_util.unflatten_dict(chunk)
            chunk, size = {}, 0
        chunk[path] = piece
        size += nbytes
    if chunk:
        yield traverse_util.unflatten_dict(chunk)


def _chunk_metadata(chunk_dir: Path, checkpointer: Any) -> dict[ParamPath, Any]:
    return traverse_util.flatten_dict(checkpointer.metadata(chunk_dir).item_metadata.tree)


def _restore_chunk(chunk_dir: Path, checkpointer: Any, placement: dict[ParamPath, jax.sharding.Sharding]) -> Params:
    """Restore one chunk's arrays, each placed as ``placement`` says."""
    import orbax.checkpoint as ocp

    target = traverse_util.unflatten_dict(
        {path: jax.ShapeDtypeStruct(meta.shape, meta.dtype, sharding=placement[path])
         for path, meta in _chunk_metadata(chunk_dir, checkpointer).items()}
    )
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    return traverse_util.flatten_dict(
        checkpointer.restore(chunk_dir, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args)))


def _split_leaf_shapes(metadata: dict[Path, dict[ParamPath, Any]]) -> dict[ParamPath, tuple[tuple[int, ...], Any]]:
    """Full shape and dtype of every leaf saved as row blocks."""
    rows: dict[ParamPath, int] = {}
    tails: dict[ParamPath, tuple[tuple[int, ...], Any]] = {}
    for chunk in metadata.values():
        for path, meta in chunk.items():
            if (block := _parse_block(path)) is not None:
                rows[block[0]] = rows.get(block[0], 0) + meta.shape[0]
                tails[block[0]] = (tuple(meta.shape[1:]), meta.dtype)
    return {path: ((rows[path], *tails[path][0]), tails[path][1]) for path in rows}


def restore_entry(entry: Path, sharding_for: ShardingFor | None = None) -> Params:
    """Load a finished cache entry's params (all chunks), placed with ``sharding_for``; a leaf saved as row blocks
    is written block by block into its preallocated buffer, never held twice."""
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def leaf_sharding(path: ParamPath) -> jax.sharding.Sharding:
        return (sharding_for and sharding_for(path)) or default

    flat: dict[ParamPath, jax.Array] = {}
    with _checkpointer() as checkpointer:
        chunk_dirs = sorted((entry.absolute() / PARAMS_DIR).iterdir())
        metadata = {chunk_dir: _chunk_metadata(chunk_dir, checkpointer) for chunk_dir in chunk_dirs}
        for path, (shape, dtype) in _split_leaf_shapes(metadata).items():
            flat[path] = allocate(shape, dtype, leaf_sharding(path))
        for chunk_dir in chunk_dirs:
            blocks = {path: _parse_block(path) for path in metadata[chunk_dir]}
            placement = {path: rows_sharding(leaf_sharding(block[0]), keep_rank=True) if block else leaf_sharding(path)
                         for path, block in blocks.items()}
            for path, array in _restore_chunk(chunk_dir, checkpointer, placement).items():
                if (block := blocks[path]) is None:
                    flat[path] = array
                else:
                    leaf, first = block
                    # waited for: queued updates would keep their restored blocks alive (measured: +4 GiB on 7B)
                    flat[leaf] = block_setter(leaf_sharding(leaf))(flat[leaf], array, first).block_until_ready()
    return traverse_util.unflatten_dict(flat)


def write_entry(
    cache_root: Path, key: str, params: Params, manifest: Mapping[str, Any], chunk_bytes: int = CHUNK_BYTES
) -> Path:
    """Save ``params`` + manifest under ``cache_root/key`` atomically (temp dir, then one rename)."""
    import orbax.checkpoint as ocp

    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = cache_root / f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
    final = cache_root / key
    try:
        (tmp / PARAMS_DIR).mkdir(parents=True)
        with _checkpointer() as checkpointer:
            for i, chunk in enumerate(chunk_leaves(params, chunk_bytes)):  # synchronous: one chunk's copy at a time
                checkpointer.save(
                    tmp.absolute() / PARAMS_DIR / f"{i:0{CHUNK_DIGITS}d}", args=ocp.args.PyTreeSave(chunk)
                )
        (tmp / MANIFEST_FILE).write_text(json.dumps(dict(manifest), indent=2, sort_keys=True) + "\n")
        try:
            tmp.rename(final)
        except OSError:
            if not (final / MANIFEST_FILE).is_file():  # another process finished the same entry first: keep it
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _manifest(source: str, revision: str | None, source_fingerprint: str, dtype: DTypeLike,
              converter_version: str) -> dict[str, Any]:
    return {
        "source": source,
        "revision": revision,
        "fingerprint": source_fingerprint,
        "dtype": dtype_name(dtype),
        "converter_version": converter_version,
        "jaxprobe_version": __version__,
        "created_unix": time.time(),
    }


def load_or_convert(
    source_dir: str | Path,
    cache_root: str | Path,
    dtype: DTypeLike,
    convert: Callable[[], Params],
    converter_version: str,
    sharding_for: ShardingFor | None = None,
    source: str | None = None,
    revision: str | None = None,
) -> CacheResult:
    """Params of ``source_dir`` from the cache when its fingerprint matches, else ``convert()`` them and cache.

    ``convert`` is whatever builds the params (usually ``load_params`` through a family's keymap), so this module
    knows nothing about model families. It runs before anything is written, so a ``CheckpointError`` it raises
    leaves the cache untouched.
    """
    source_dir, cache_root = Path(source_dir), Path(cache_root)
    source_fingerprint = fingerprint(source_dir)
    entry = cache_root / cache_key(source_fingerprint, dtype, converter_version)
    sweep_stale_temporaries(cache_root)
    if (entry / MANIFEST_FILE).is_file():
        manifest = json.loads((entry / MANIFEST_FILE).read_text())
        try:
            params = restore_entry(entry, sharding_for)
        except Exception as err:  # orbax/tensorstore raise many types; all mean the entry is unusable
            raise CheckpointError(
                f"cached params in {entry} cannot be restored ({type(err).__name__}: {err}); delete that directory "
                "and convert again"
            ) from err
        return CacheResult(params, entry, manifest, hit=True)
    params = convert()
    manifest = _manifest(source or str(source_dir), revision, source_fingerprint, dtype, converter_version)
    entry = write_entry(cache_root, entry.name, params, manifest)
    return CacheResult(params, entry, manifest, hit=False)


def convert_checkpoint(
    src: str | Path,
    out_dir: str | Path,
    dtype: DTypeLike = "float32",
    *,
    converter_for: ConverterFor,
    revision: str | None = None,
    sharding_for: ShardingFor | None = None,
    hub_cache_dir: str | Path | None = None,
) -> CacheResult:
    """``jaxprobe convert SRC --out DIR``: resolve SRC (directory or Hub id), convert through the family's keymap.

    ``converter_for(config) -> Converter`` is the families registry's hook; it is a parameter so the weights
    package never imports model or family code.
    """
    local_dir, resolved_revision = resolve_source(src, revision, cache_dir=hub_cache_dir)
    converter = converter_for(read_config_json(local_dir))

    def convert() -> Params:
        return load_params(local_dir, converter.keymap, converter.abstract_params, dtype, sharding_for)

    return load_or_convert(local_dir, out_dir, dtype, convert, converter.version, sharding_for, str(src),
                           resolved_revision)
