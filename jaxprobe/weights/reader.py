"""Stream tensors out of a HuggingFace safetensors checkpoint directory, one at a time.

Host memory should peak near one tensor, not the model, so nothing here ever builds a full state dict. We parse
the (tiny, documented) safetensors header ourselves. ``read_slice`` reads one tensor (or the slice of it one
device holds) through a memory map that lives only for that read: pages of a long-lived map stay resident (and
count in RSS) until the file is closed, which for a single-file checkpoint would double peak memory, while a
short-lived map touches only the pages of the requested slice (a host of a multi-host run reads its own shards).
"""

from __future__ import annotations

import json
import mmap
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

from jaxprobe.errors import CheckpointError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
HEADER_LENGTH_BYTES = 8  # little-endian u64 at the start of every safetensors file
MAX_HEADER_BYTES = 100 * 2**20  # the format's own limit; a larger value means the file is not safetensors
METADATA_KEY = "__metadata__"

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives inside a safetensors file (offsets are absolute, from the file start)."""

    dtype: np.dtype
    shape: tuple[int, ...]
    start: int
    end: int


def _corrupt(file: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"{file} is not a readable safetensors file: {what}. The download was probably interrupted; "
        "delete the file and download or save the checkpoint again."
    )


def read_header(file: str | Path) -> dict[str, TensorInfo]:
    """Parse and validate ``file``'s header: every tensor's bytes must lie inside the file (catches truncation)."""
    file = Path(file)
    size = file.stat().st_size
    with open(file, "rb") as handle:
        raw_length = handle.read(HEADER_LENGTH_BYTES)
        if len(raw_length) < HEADER_LENGTH_BYTES:
            raise _corrupt(file, f"only {size} bytes, too short for a header")
        (length,) = struct.unpack("<Q", raw_length)
        if length > min(MAX_HEADER_BYTES, size - HEADER_LENGTH_BYTES):
            raise _corrupt(file, f"header claims {length} bytes but the file has {size}")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise _corrupt(file, f"header is not JSON ({err})") from None
    data_start = HEADER_LENGTH_BYTES + length
    infos = {}
    for name, entry in header.items():
        if name == METADATA_KEY:
            continue
        infos[name] = _tensor_info(file, name, entry, data_start, size)
    return infos


def _tensor_info(file: Path, name: str, entry: dict, data_start: int, size: int) -> TensorInfo:
    if isinstance(entry, dict) and "dtype" in entry and entry["dtype"] not in DTYPES:
        raise CheckpointError(
            f"tensor {name!r} in {file} has dtype {entry['dtype']}, which jaxprobe cannot read; supported: "
            f"{sorted(DTYPES)}"
        )
    try:
        dtype = DTYPES[entry["dtype"]]
        shape = tuple(int(d) for d in entry["shape"])
        begin, end = (int(o) for o in entry["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise _corrupt(file, f"tensor {name!r} has a malformed header entry {entry!r}") from None
    if end - begin != dtype.itemsize * int(np.prod(shape)):
        raise _corrupt(file, f"tensor {name!r} has {end - begin} bytes for shape {shape} of {entry['dtype']}")
    if data_start + end > size:
        raise _corrupt(
            file, f"tensor {name!r} ends at byte {data_start + end} but the file has only {size} bytes (truncated)"
        )
    return TensorInfo(dtype=dtype, shape=shape, start=data_start + begin, end=data_start + end)


def _read_index(directory: Path) -> dict[str, Path]:
    index = directory / INDEX_FILE
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{index} is not a valid safetensors index (need a 'weight_map'): {err}") from None
    unsafe = sorted({f for f in weight_map.values() if not isinstance(f, str) or Path(f).name != f})
    if unsafe:
        raise CheckpointError(f"{index} names shard files outside {directory}: {unsafe}; refusing to read them")
    files = {name: directory / file for name, file in weight_map.items()}
    absent = sorted({f.name for f in files.values() if not f.is_file()})
    if absent:
        raise CheckpointError(
            f"{index} lists shard file(s) {absent} that are not in {directory}: the download is incomplete; "
            "fetch the missing shards or download the checkpoint again."
        )
    return files


def tensor_files(directory: str | Path) -> dict[str, Path]:
    """Map every tensor name to the safetensors file holding it (sharded or single-file checkpoints)."""
    directory = Path(directory)
    if (directory / INDEX_FILE).is_file():
        return _read_index(directory)
    single = directory / SINGLE_FILE
    if not single.is_file():
        found = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else "nothing"
        raise CheckpointError(
            f"expected {SINGLE_FILE} or {INDEX_FILE} in {directory}, found {found}. "
            "jaxprobe reads only safetensors checkpoints; convert .bin weights with transformers first."
        )
    return dict.fromkeys(read_header(single), single)


def checkpoint_headers(directory: str | Path) -> dict[Path, dict[str, TensorInfo]]:
    """Validated headers of every file, grouped by file; each indexed name must be in the file the index names.

    Reading all headers first means a truncated or inconsistent shard is reported before any tensor is loaded.
    """
    by_file: dict[Path, list[str]] = {}
    for name, file in tensor_files(directory).items():
        by_file.setdefault(file, []).append(name)
    headers = {}
    for file, names in by_file.items():
        infos = read_header(file)
        lost = sorted(n for n in names if n not in infos)
        if lost:
            raise CheckpointError(
                f"tensor {lost[0]!r} (and {len(lost) - 1} more) is listed in {INDEX_FILE} under {file} but that "
                "file does not contain it: the index and the shards disagree; download the checkpoint again."
            )
        headers[file] = {n: infos[n] for n in sorted(names)}
    return headers


def read_tensor(handle, file: Path, name: str, info: TensorInfo) -> np.ndarray:
    """Read one tensor's bytes into a fresh array (no memory map, so nothing stays resident after use)."""
    array = np.empty(info.shape, dtype=info.dtype)
    handle.seek(info.start)
    got = handle.readinto(memoryview(array.reshape(-1).view(np.uint8)))
    if got != info.end - info.start:
        raise _corrupt(file, f"tensor {name!r}: read {got} of {info.end - info.start} bytes (file changed?)")
    return array


def read_slice(file: Path, info: TensorInfo, transform=None, index: tuple[slice, ...] | None = None,
               dtype: np.dtype | None = None) -> np.ndarray:
    """A fresh array ``transform(tensor)[index]`` cast to ``dtype``, touching only the pages it needs."""
    count = int(np.prod(info.shape))
    if count == 0:
        view = np.empty(info.shape, info.dtype)
        return np.asarray((transform(view) if transform else view)[index or ()], dtype=dtype or info.dtype)
    with open(file, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        if info.end > len(mapped):
            raise _corrupt(file, f"tensor ends at byte {info.end} but the file now has {len(mapped)} (file changed?)")
        view = np.frombuffer(mapped, dtype=info.dtype, count=count, offset=info.start).reshape(info.shape)
        selected = (transform(view) if transform else view)[index or ()]
        out = np.array(selected, dtype=dtype or info.dtype, order="C")
        del view, selected
    return out


def read_config_json(checkpoint_dir: str | Path) -> dict:
    """config.json of a checkpoint directory, or a CheckpointError saying it is missing or broken."""
    path = Path(checkpoint_dir) / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: a checkpoint directory needs the model's config.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from None


def iter_tensors(directory: str | Path) -> Iterator[tuple[str, Path, np.ndarray]]:
    """Yield ``(name, file, array)`` file by file; bfloat16 arrives as an ``ml_dtypes`` numpy array."""
    for file, infos in checkpoint_headers(directory).items():
        with open(file, "rb") as handle:
            for name, info in infos.items():
                yield name, file, read_tensor(handle, file, name, info)
