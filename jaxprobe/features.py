"""The FeatureStore: one vector per site per image, on disk, readable with numpy alone.

Layout of ``<workdir>/features/``::

    meta.json          {"format": 1, "num_samples": N, "class_names": [...], "sites": {site: {"dim": D,
                        "dtype": "float32"}}, "fingerprint": "...", "rows_done": n, "site_layout": {...}}
    index.parquet      one row per sample: row, id, label, split, group (+ answer_pred, answer_prob when present)
    <site>.npy         [N, D] array per site (plain ``.npy``, open with ``np.load(path, mmap_mode="r")``)

Rows are written in chunks into preallocated ``.npy`` memmaps and ``rows_done`` advances only after a chunk is
flushed, so a killed writer resumes at the first unfinished chunk and ends with exactly the same arrays.

Features are stored as float32, float16 or bfloat16. A value that the storage dtype cannot hold (float16
overflows to inf above 65504) is refused at write time with its site and rows, as are NaN/inf features. A
bfloat16 array has no ``.npy`` type code: it is stored as 2-byte words (``|V2``) that ``FeatureStore.load``
views as ``ml_dtypes.bfloat16``.

``site_layout`` (optional, written by extraction from the model's config) tells scoring which sites play which
role without importing any model code: ``{"vision_depth": int, "llm_depth": int, "connector_source":
"vision.layer_NN" (the vision site whose output feeds the connector), "vision_pooling": "mean_patches" | "cls"}``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import ml_dtypes
import numpy as np
import pandas as pd

from jaxprobe.errors import ConfigError, FeatureError

FORMAT_VERSION = 1
META_FILE = "meta.json"
INDEX_FILE = "index.parquet"
INDEX_COLUMNS = ("row", "id", "label", "split", "group")
# A store made by hand may lack these; the probes then treat each image as its own group (with a note).
OPTIONAL_INDEX_COLUMNS = ("group",)
IDENTITY_COLUMNS = ("id", "label", "group")  # what a resumed store must share with the dataset it is resumed for
META_KEYS = ("num_samples", "class_names", "sites", "fingerprint", "rows_done")
FEATURE_DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16),
                  "bfloat16": np.dtype(ml_dtypes.bfloat16)}
SITE_LAYOUT_KEYS = ("vision_depth", "llm_depth", "connector_source", "vision_pooling")


def site_file(site: str) -> str:
    """Site names are dotted (``llm.layer_03.last_token``); they are also safe file names."""
    return f"{site}.npy"


def settings_fingerprint(settings: Mapping) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _flat(settings: Mapping | None, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in (settings or {}).items():
        if isinstance(value, Mapping):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def describe_difference(old: Mapping, new: Mapping) -> str:
    """The settings (or sites) in which two stores' metas differ, for a refusal message."""
    before, after = _flat(old.get("settings")), _flat(new.get("settings"))
    changed = [f"{key}: {before.get(key)!r} -> {after.get(key)!r}" for key in sorted(set(before) | set(after))
               if before.get(key) != after.get(key)]
    if old.get("sites") != new.get("sites"):
        changed.append(f"sites: {len(old.get('sites') or {})} -> {len(new.get('sites') or {})} selected")
    return "; ".join(changed[:6]) or f"fingerprint {old.get('fingerprint')} vs {new.get('fingerprint')}"


def split_fingerprint(index: pd.DataFrame) -> str:
    """Hash of which sample is in which split (independent of row order): results made on one split, such as the
    vision-tower baseline, are refused as a reference for another."""
    pairs = sorted(zip(index["id"].astype(str), index["split"].astype(str), strict=True))
    return hashlib.sha256("\n".join(f"{i}\t{s}" for i, s in pairs).encode()).hexdigest()[:16]


def assign_split(path: str | Path, split_by_id: Mapping[str, str]) -> bool:
    """Rewrite a store's ``split`` column from {sample id: split} (features do not depend on the split); True if
    it changed. meta.json records a hash of the assignment, so stages that read the split (probes) see the store
    as new."""
    path = Path(path)
    index = pd.read_parquet(path / INDEX_FILE)
    missing = sorted(set(index["id"]) - set(split_by_id.keys()))
    if missing:
        raise FeatureError(f"{path} holds samples the dataset no longer has (e.g. {missing[:3]}); extract again")
    split = index["id"].map(dict(split_by_id)).to_numpy(dtype=object)
    if (index["split"].to_numpy(dtype=object) == split).all():
        return False
    index["split"] = split
    temporary = path / (INDEX_FILE + ".tmp")
    index.to_parquet(temporary, index=False)
    os.replace(temporary, path / INDEX_FILE)
    meta = json.loads((path / META_FILE).read_text())
    meta["split"] = hashlib.sha256("\n".join(map(str, split)).encode()).hexdigest()[:16]
    _write_json_atomic(path / META_FILE, meta)
    return True


def _write_json_atomic(path: Path, payload: dict) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(payload, indent=1))
    os.replace(temporary, path)


def feature_dtype(name: str) -> np.dtype:
    """The numpy dtype of a storage dtype name, or a ``ConfigError`` listing the ones a store can hold."""
    if name not in FEATURE_DTYPES:
        raise ConfigError(f"feature dtype {name!r} is not supported; capture.feature_dtype must be one of "
                          f"{', '.join(FEATURE_DTYPES)}")
    return FEATURE_DTYPES[name]


def _damaged(path: Path, problem: str) -> FeatureError:
    return FeatureError(f"{path} is damaged ({problem}); move the features directory aside and rerun "
                        "`jaxprobe extract` with the same config to rebuild it")


def _check_array_file(path: Path, rows: int, dim: int, dtype: np.dtype) -> None:
    """The ``.npy`` header says [rows, dim] of ``dtype`` and the file holds every byte of it (not truncated)."""
    if not path.is_file():
        raise _damaged(path, "the file is missing")
    try:
        with path.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, stored = read_header(handle)
            offset = handle.tell()
    except (OSError, ValueError, SyntaxError) as error:
        raise _damaged(path, f"unreadable .npy header: {error}") from error
    if tuple(shape) != (rows, dim) or stored.itemsize != dtype.itemsize:
        raise _damaged(path, f"it holds {stored} {list(shape)}, the store's meta.json says {dtype} [{rows}, {dim}]")
    size, expected = path.stat().st_size, offset + rows * dim * dtype.itemsize
    if size < expected:
        raise _damaged(path, f"{size} bytes, {expected} expected: truncated")


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _damaged(path / META_FILE, f"not readable JSON: {error}") from error
    missing = [key for key in META_KEYS if not isinstance(meta, dict) or key not in meta]
    if missing:
        raise _damaged(path / META_FILE, f"keys {missing} are missing")
    return meta


def _read_index(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for a damaged file; all mean the same here
        raise _damaged(path, f"not a readable parquet file: {type(error).__name__}: {error}") from error


@dataclasses.dataclass(frozen=True)
class FeatureStore:
    """Read access to a complete feature store."""

    path: Path
    meta: dict
    index: pd.DataFrame

    @staticmethod
    def read_meta(path: str | Path) -> dict:
        """A store's meta.json, or a ``FeatureError`` saying it is missing or damaged."""
        path = Path(path)
        if not (path / META_FILE).is_file():
            raise FeatureError(f"no feature store at {path} (no {META_FILE}); run `jaxprobe extract` first")
        return _read_meta(path)

    @classmethod
    def open(cls, path: str | Path) -> FeatureStore:
        path = Path(path)
        meta = cls.read_meta(path)
        if meta["rows_done"] < meta["num_samples"]:
            raise FeatureError(f"feature store {path} is incomplete ({meta['rows_done']}/{meta['num_samples']} "
                                    "rows); rerun `jaxprobe extract` with the same config to finish it")
        index = _read_index(path / INDEX_FILE)
        missing = [column for column in INDEX_COLUMNS
                   if column not in index.columns and column not in OPTIONAL_INDEX_COLUMNS]
        if missing or len(index) != meta["num_samples"]:
            raise _damaged(path / INDEX_FILE, f"{len(index)} rows with columns {list(index.columns)}; expected "
                                              f"{meta['num_samples']} rows with {list(INDEX_COLUMNS)}")
        for site, spec in meta["sites"].items():
            _check_array_file(path / site_file(site), meta["num_samples"], int(spec["dim"]),
                              feature_dtype(spec["dtype"]))
        return cls(path, meta, index)

    @property
    def sites(self) -> list[str]:
        return list(self.meta["sites"])

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def site_layout(self) -> dict | None:
        """Depths, connector source and vision pooling of the model (``SiteLayout``), or None (user-made stores)."""
        return self.meta.get("site_layout")

    def load(self, site: str) -> np.ndarray:
        """[N, D] features of one site, memory-mapped (nothing is read until used)."""
        if site not in self.meta["sites"]:
            raise FeatureError(f"site {site!r} is not in {self.path}; sites: {self.sites[:6]}...")
        return _open_array(self.path / site_file(site), self.meta["sites"][site]["dtype"], "r")

    def sites_by_width(self, sites: Sequence[str] | None = None) -> dict[int, list[str]]:
        """Group sites by feature width, so each group stacks into one [S, N, D] array."""
        groups: dict[int, list[str]] = {}
        for site in sites or self.sites:
            groups.setdefault(int(self.meta["sites"][site]["dim"]), []).append(site)
        return groups

    def read_rows(self, sites: Sequence[str], rows: np.ndarray, dtype=np.float32) -> np.ndarray:
        """[S, len(rows), D] of equal-width ``sites`` at ``rows`` (sorted row numbers read best), read from the
        memmaps site by site, so a caller streaming sites in chunks holds only the rows it asked for."""
        out = None
        for k, site in enumerate(sites):
            values = self.load(site)[rows]
            if out is None:
                out = np.empty((len(sites), len(rows), values.shape[-1]), dtype)
            if values.shape[-1] != out.shape[-1]:
                raise FeatureError(f"sites of different widths cannot share a stack: {site} has {values.shape[-1]}, "
                                   f"{sites[0]} has {out.shape[-1]}; read each width group on its own")
            out[k] = values
        return out

    def stack(self, sites: Sequence[str], dtype=np.float32) -> np.ndarray:
        """[S, N, D] stack of equal-width sites."""
        widths = self.sites_by_width(sites)
        if len(widths) > 1:
            raise FeatureError(f"sites of different widths cannot share a stack: {widths} (width: sites); "
                               "stack each group of `sites_by_width` on its own")
        return np.stack([np.asarray(self.load(site), dtype=dtype) for site in sites])


def _open_array(path: Path, dtype_name: str, mode: str) -> np.ndarray:
    """A site's memmap in its storage dtype (bfloat16 files hold 2-byte words that are viewed as bfloat16)."""
    try:
        array = np.load(path, mmap_mode=mode)
    except (OSError, ValueError) as error:
        raise _damaged(path, f"{type(error).__name__}: {error}") from error
    dtype = feature_dtype(dtype_name)
    return array.view(dtype) if array.dtype != dtype else array


def _first_difference(old: pd.DataFrame, new: pd.DataFrame) -> str:
    """Where two indexes stop describing the same samples, in words."""
    if len(old) != len(new):
        return f"{len(old)} samples in the store, {len(new)} in the dataset now"
    for column in IDENTITY_COLUMNS:
        differs = np.flatnonzero(old[column].astype(str).to_numpy() != new[column].astype(str).to_numpy())
        if differs.size:
            row = int(differs[0])
            return (f"{differs.size} rows differ in {column!r}, first at row {row}: {old[column].iloc[row]!r} in the "
                    f"store vs {new[column].iloc[row]!r} now")
    return ""


class FeatureStoreWriter:
    """Chunked, resumable writer; a store written for another fingerprint or dataset is refused, never mixed into."""

    def __init__(self, path: str | Path, index: pd.DataFrame, class_names: Sequence[str],
                 site_dims: Mapping[str, int], fingerprint: str | Mapping, dtype: str = "float32",
                 site_layout: Mapping | None = None) -> None:
        """``fingerprint``: what the features depend on, as a settings mapping (hashed, and kept in meta.json so a
        refusal can name the settings that differ) or a precomputed string."""
        self.path = Path(path)
        missing = [c for c in INDEX_COLUMNS if c not in index.columns]
        if missing:
            raise ValueError(f"index lacks columns {missing}")
        feature_dtype(dtype)
        if site_layout is not None and not set(SITE_LAYOUT_KEYS) <= set(site_layout):
            raise ValueError(f"site_layout needs the keys {SITE_LAYOUT_KEYS}, got {sorted(site_layout)}")
        settings = dict(fingerprint) if isinstance(fingerprint, Mapping) else None
        meta = {"format": FORMAT_VERSION, "num_samples": len(index), "class_names": list(class_names),
                "sites": {s: {"dim": int(d), "dtype": dtype} for s, d in site_dims.items()},
                "fingerprint": settings_fingerprint(settings) if settings is not None else fingerprint,
                "settings": settings, "site_layout": dict(site_layout) if site_layout else None, "rows_done": 0}
        self.meta = self._resume_or_create(meta, index)

    def _resume_or_create(self, meta: dict, index: pd.DataFrame) -> dict:
        meta_path = self.path / META_FILE
        old = _read_meta(self.path) if meta_path.is_file() else None
        if old is not None and old.get("rows_done", 0) > 0:  # an empty store (a crash before any row) is replaced
            if old["fingerprint"] != meta["fingerprint"] or old["sites"] != meta["sites"]:
                raise ConfigError(f"{self.path} holds {old['rows_done']} rows of features of another config "
                                  f"({describe_difference(old, meta)}); restore those settings to resume it, or use "
                                  f"a new work directory (or delete {self.path}) to extract again")
            difference = _first_difference(_read_index(self.path / INDEX_FILE), index)
            if difference:
                raise FeatureError(f"{self.path} holds features of other samples than the dataset has now "
                                   f"({difference}): the dataset changed since extraction; use a new work "
                                   f"directory or move {self.path} aside")
            return old
        self.path.mkdir(parents=True, exist_ok=True)
        index.to_parquet(self.path / INDEX_FILE, index=False)
        for site, spec in meta["sites"].items():
            np.lib.format.open_memmap(self.path / site_file(site), mode="w+", dtype=feature_dtype(spec["dtype"]),
                                      shape=(meta["num_samples"], spec["dim"])).flush()
        _write_json_atomic(meta_path, meta)
        return meta

    @property
    def rows_done(self) -> int:
        return int(self.meta["rows_done"])

    def write_chunk(self, start: int, features: Mapping[str, np.ndarray], answers: pd.DataFrame | None = None) -> None:
        """Write rows ``start:start+n`` of every site, then advance ``rows_done`` (the commit point)."""
        if start != self.rows_done:
            raise ValueError(f"chunks must be written in order: expected row {self.rows_done}, got {start}")
        count = len(next(iter(features.values())))
        for site, spec in self.meta["sites"].items():
            stored = _storable(site, np.asarray(features[site]), spec["dtype"], start)
            array = _open_array(self.path / site_file(site), spec["dtype"], "r+")
            array[start:start + count] = stored
            array.flush()
        if answers is not None:
            self._write_answers(start, answers)
        self.meta["rows_done"] = start + count
        _write_json_atomic(self.path / META_FILE, self.meta)

    def _write_answers(self, start: int, answers: pd.DataFrame) -> None:
        index = pd.read_parquet(self.path / INDEX_FILE)
        for column in answers.columns:
            if column not in index:  # text columns (generated answers) stay text; numbers start as NaN
                index[column] = pd.Series([None] * len(index), dtype=object) if answers[column].dtype == object \
                    else np.nan
            index.loc[start:start + len(answers) - 1, column] = answers[column].to_numpy()
        temporary = self.path / (INDEX_FILE + ".tmp")
        index.to_parquet(temporary, index=False)
        os.replace(temporary, self.path / INDEX_FILE)


def _storable(site: str, values: np.ndarray, dtype_name: str, start: int) -> np.ndarray:
    """``values`` cast to the storage dtype, or a ``FeatureError`` naming the site and rows that would be lost."""
    finite = np.isfinite(values).reshape(len(values), -1).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite) + start
        raise FeatureError(f"site {site} produced NaN/inf features for rows {bad[:10].tolist()}")
    with np.errstate(over="ignore"):  # overflow is what the next lines look for
        stored = values.astype(feature_dtype(dtype_name))
    kept = np.isfinite(stored.astype(np.float32)).reshape(len(values), -1).all(axis=1)
    if not kept.all():
        bad = np.flatnonzero(~kept) + start
        largest = float(np.abs(values[~kept]).max())
        limit = float(ml_dtypes.finfo(stored.dtype).max)
        raise FeatureError(f"site {site} has values up to {largest:.4g} in rows {bad[:10].tolist()}, beyond "
                           f"{dtype_name}'s largest {limit:.4g}: they would be stored as inf; set "
                           "capture.feature_dtype=float32 (or bfloat16) and extract into a new work directory")
    return stored
