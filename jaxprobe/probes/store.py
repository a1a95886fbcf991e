"""From a FeatureStore (ours or user-made) to probe tasks: labels, groups and splits checked, sites selected by
glob, and sites streamed in chunks sized to a memory budget.

What a user-made store may lack and what happens: no ``group`` column -> every row is its own group (a note says
so: folds and permutations cannot keep a patient's images together); string labels -> mapped through the
store's ``class_names`` (a label that is not one of them is an error naming it); site names outside the DESIGN
naming are probed like any other.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd

from jaxprobe.errors import FeatureError
from jaxprobe.features import FeatureStore
from jaxprobe.probes.engine import ProbeTask

# Float32 arrays a site needs at once, in units of its [N, D] features: the features and their standardised copy
# (host and device), the Gram/kernel, eigenvectors and workspace, span coordinates (float32 and, while they are
# certified, float64); measured against peak RSS by benchmarks/probe_cell.py.
SITE_FEATURE_COPIES = 4
SITE_SQUARE_COPIES = 6


@dataclasses.dataclass(frozen=True)
class StoreRows:
    """The store's rows as the probes need them: train rows first, then test rows (other splits unused)."""

    rows: np.ndarray  # store row numbers, train then test
    labels: np.ndarray
    groups: np.ndarray
    num_train: int
    class_names: list[str]

    @property
    def train(self) -> np.ndarray:
        return np.arange(self.num_train)

    @property
    def test(self) -> np.ndarray:
        return np.arange(self.num_train, len(self.rows))


def _labels(index: pd.DataFrame, class_names: list[str] | None) -> tuple[np.ndarray, list[str]]:
    labels = index["label"]
    if labels.dtype == object or pd.api.types.is_string_dtype(labels):
        if not class_names:
            raise FeatureError("index.parquet has string labels but meta.json lists no class_names to map them "
                               "through; add \"class_names\": [...] to meta.json or store integer labels")
        unknown = sorted(set(labels.astype(str)) - set(class_names))
        if unknown:
            raise FeatureError(f"labels {unknown[:5]} are not among meta.json's class_names {class_names}; fix the "
                               "labels or the class_names")
        return labels.astype(str).map({name: k for k, name in enumerate(class_names)}).to_numpy(int), class_names
    values = labels.to_numpy()
    if not np.issubdtype(values.dtype, np.number) or not np.isfinite(values).all() or (values % 1 != 0).any():
        raise FeatureError(f"index.parquet labels must be integer class numbers (or class names), got dtype "
                           f"{labels.dtype} with values like {labels.head(3).tolist()}")
    values = values.astype(int)
    names = list(class_names) if class_names else [str(k) for k in range(values.max() + 1)]
    if values.min() < 0 or values.max() >= len(names):
        raise FeatureError(f"labels span {values.min()}..{values.max()} but meta.json has {len(names)} class_names "
                           f"{names}; labels must be 0..{len(names) - 1}")
    return values, names


def store_rows(store: FeatureStore, note: Callable[[str], None]) -> StoreRows:
    """Labels, groups and the train/test rows of ``store``'s index, checked."""
    index = store.index
    missing = [column for column in ("label", "split") if column not in index]
    if missing:
        raise FeatureError(f"{store.path}/index.parquet lacks columns {missing}; it needs one row per sample with "
                           "'label' and 'split' ('train'/'test'), and optionally 'id' and 'group'")
    labels, names = _labels(index, store.meta.get("class_names"))
    if "group" in index:
        groups = index["group"].astype(str).to_numpy()
    else:
        groups = (index["id"] if "id" in index else pd.Series(np.arange(len(index)))).astype(str).to_numpy()
        note(f"{store.path}/index.parquet has no 'group' column: each image is its own group, so folds and "
             "permutations cannot keep a patient's images together")
    split = index["split"].astype(str).to_numpy()
    train, test = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    if len(train) == 0 or len(test) == 0:
        raise FeatureError(f"probing needs rows with split 'train' and 'test'; {store.path}/index.parquet has "
                           f"splits {sorted(set(split))}")
    rows = np.concatenate([train, test])
    return StoreRows(rows, labels[rows], groups[rows], len(train), names)


def select_sites(sites: list[str], globs: tuple[str, ...]) -> list[str]:
    """Sites matching any glob, in store order; a glob matching nothing is an error (a typo must not silently
    probe less)."""
    unmatched = [glob for glob in globs if not fnmatch.filter(sites, glob)]
    if unmatched:
        raise FeatureError(f"site globs {unmatched} match no site of the store; sites: {sites[:8]}"
                           f"{'...' if len(sites) > 8 else ''} ({len(sites)} in all)")
    return [site for site in sites if any(fnmatch.fnmatchcase(site, glob) for glob in globs)]


def site_width(store: FeatureStore, site: str) -> int:
    spec = store.meta.get("sites", {}).get(site, {})
    return int(spec["dim"]) if "dim" in spec else int(store.load(site).shape[-1])


def site_bytes(rows: int, width: int) -> int:
    """Peak bytes one site of ``rows`` x ``width`` float32 features takes while it is probed."""
    return 4 * (SITE_FEATURE_COPIES * rows * width + SITE_SQUARE_COPIES * min(rows, width) ** 2 + 2 * rows * rows)


def chunk_size(rows: int, width: int, memory_gb: float, devices: int) -> int:
    """Sites per chunk under ``memory_gb`` (at least one), a multiple of the devices when more than that fit."""
    fits = int(memory_gb * 2**30 // site_bytes(rows, width))
    return fits // devices * devices if fits >= devices else max(1, fits)


def tasks(store: FeatureStore, sites: list[str], rows: StoreRows, memory_gb: float,
          devices: int) -> Iterator[ProbeTask]:
    """``ProbeTask``s of equal-width sites, each small enough for the memory budget, read from the memmaps."""
    by_width: dict[int, list[str]] = {}
    for site in sites:
        by_width.setdefault(site_width(store, site), []).append(site)
    for width, group in by_width.items():
        size = chunk_size(len(rows.rows), width, memory_gb, devices)
        for start in range(0, len(group), size):
            chunk = group[start:start + size]
            features = store.read_rows(chunk, rows.rows)
            yield ProbeTask(chunk, features, rows.labels, rows.groups, rows.train, rows.test, len(rows.class_names))
