"""The FeatureStore: one vector per site per image, on disk, readable with numpy alone.

Layout of ``<workdir>/features/``::

    meta.json          {"format": 1, "num_samples": N, "class_names": [...], "sites": {site: {"dim": D,
                        "dtype": "float32"}}, "fingerprint": "...", "rows_done": n}
    index.parquet      one row per sample: row, id, label, split, group (+ answer_pred, answer_prob when present)
    <site>.npy         [N, D] array per site (plain ``.npy``, open with ``np.load(path, mmap_mode="r")``)

Rows are written in chunks into preallocated ``.npy`` memmaps and ``rows_done`` advances only after a chunk is
flushed, so a killed writer resumes at the first unfinished chunk and ends with exactly the same arrays.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from jaxprobe.errors import ConfigError, FeatureError

FORMAT_VERSION = 1
META_FILE = "meta.json"
INDEX_FILE = "index.parquet"
INDEX_COLUMNS = ("row", "id", "label", "split", "group")


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
        try:
            return json.loads((path / META_FILE).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise FeatureError(f"{path / META_FILE} is damaged ({error}); delete {path} and extract again") from None

    @classmethod
    def open(cls, path: str | Path) -> FeatureStore:
        path = Path(path)
        meta = cls.read_meta(path)
        if meta["rows_done"] < meta["num_samples"]:
            raise FeatureError(f"feature store {path} is incomplete ({meta['rows_done']}/{meta['num_samples']} "
                                    "rows); rerun `jaxprobe extract` with the same config to finish it")
        return cls(path, meta, pd.read_parquet(path / INDEX_FILE))

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
        return np.load(self.path / site_file(site), mmap_mode="r")

    def sites_by_width(self, sites: Sequence[str] | None = None) -> dict[int, list[str]]:
        """Group sites by feature width, so each group stacks into one [S, N, D] array."""
        groups: dict[int, list[str]] = {}
        for site in sites or self.sites:
            groups.setdefault(int(self.meta["sites"][site]["dim"]), []).append(site)
        return groups

    def stack(self, sites: Sequence[str], dtype=np.float32) -> np.ndarray:
        """[S, N, D] stack of equal-width sites."""
        widths = self.sites_by_width(sites)
        if len(widths) > 1:
            raise FeatureError(f"sites of different widths cannot share a stack: {widths} (width: sites); "
                               "stack each group of `sites_by_width` on its own")
        return np.stack([np.asarray(self.load(site), dtype=dtype) for site in sites])


class FeatureStoreWriter:
    """Chunked, resumable writer; a store written for another fingerprint is refused, never mixed into."""

    def __init__(self, path: str | Path, index: pd.DataFrame, class_names: Sequence[str],
                 site_dims: Mapping[str, int], fingerprint: str | Mapping, dtype: str = "float32",
                 site_layout: Mapping | None = None) -> None:
        """``fingerprint``: what the features depend on, as a settings mapping (hashed, and kept in meta.json so a
        refusal can name the settings that differ) or a precomputed string."""
        self.path = Path(path)
        missing = [c for c in INDEX_COLUMNS if c not in index.columns]
        if missing:
            raise ValueError(f"index lacks columns {missing}")
        settings = dict(fingerprint) if isinstance(fingerprint, Mapping) else None
        meta = {"format": FORMAT_VERSION, "num_samples": len(index), "class_names": list(class_names),
                "sites": {s: {"dim": int(d), "dtype": dtype} for s, d in site_dims.items()},
                "fingerprint": settings_fingerprint(settings) if settings is not None else fingerprint,
                "settings": settings, "site_layout": dict(site_layout) if site_layout else None, "rows_done": 0}
        self.meta = self._resume_or_create(meta, index)

    def _resume_or_create(self, meta: dict, index: pd.DataFrame) -> dict:
        meta_path = self.path / META_FILE
        old = json.loads(meta_path.read_text()) if meta_path.is_file() else None
        if old is not None and old.get("rows_done", 0) > 0:  # an empty store (a crash before any row) is replaced
            if old["fingerprint"] != meta["fingerprint"] or old["sites"] != meta["sites"]:
                raise ConfigError(f"{self.path} holds {old['rows_done']} rows of features of another config "
                                  f"({describe_difference(old, meta)}); restore those settings to resume it, or use "
                                  f"a new work directory (or delete {self.path}) to extract again")
            return old
        self.path.mkdir(parents=True, exist_ok=True)
        index.to_parquet(self.path / INDEX_FILE, index=False)
        for site, spec in meta["sites"].items():
            np.lib.format.open_memmap(self.path / site_file(site), mode="w+", dtype=spec["dtype"],
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
        for site in self.meta["sites"]:
            values = np.asarray(features[site])
            if not np.isfinite(values).all():
                bad = np.flatnonzero(~np.isfinite(values).all(axis=1)) + start
                raise FeatureError(f"site {site} produced NaN/inf features for rows {bad[:10].tolist()}")
            array = np.load(self.path / site_file(site), mmap_mode="r+")
            array[start:start + count] = values
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
