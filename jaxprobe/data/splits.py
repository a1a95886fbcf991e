"""Train/val/test indices: seeded, stratified, optionally patient-grouped, or the official ones.

Everything is built on scikit-learn's ``model_selection`` splitters. Grouped variants guarantee that no group
(patient) lands in two splits, the leakage that inflates accuracy on BUSI and COVID19-CT.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from jaxprobe.errors import DatasetError
from jaxprobe.stats.folds import check_class_counts

SPLIT_NAMES = ("train", "val", "test")
STRATEGIES = ("stratified", "grouped", "official")

Indices = dict[str, np.ndarray]


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 <= val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DatasetError(f"need 0 <= val < 1, 0 < test < 1 and val + test < 1; got {val_fraction}, {test_fraction}")


def stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> Indices:
    """Class-stratified random train/val/test indices (sorted)."""
    _check_fractions(val_fraction, test_fraction)
    labels = np.asarray(labels)
    check_class_counts(labels, 3 if val_fraction else 2, "samples")
    everything = np.arange(len(labels))
    rest, test = train_test_split(everything, test_size=test_fraction, stratify=labels, random_state=seed)
    val = np.array([], dtype=int)
    if val_fraction:
        share = val_fraction / (1 - test_fraction)
        rest, val = train_test_split(rest, test_size=share, stratify=labels[rest], random_state=seed)
    return {"train": np.sort(rest), "val": np.sort(val), "test": np.sort(test)}


def _group_holdout(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Hold out about ``fraction`` of samples as whole groups, keeping class proportions as well as groups allow."""
    n_splits = max(2, round(1 / fraction))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" is reported by check_class_counts
        keep, held = next(splitter.split(np.zeros(len(labels)), labels, groups))
    return keep, held


def grouped_split(labels: np.ndarray, groups: np.ndarray, val_fraction: float, test_fraction: float,
                  seed: int) -> Indices:
    """Like ``stratified_split`` but no group in two splits; fractions are met as closely as groups allow."""
    _check_fractions(val_fraction, test_fraction)
    labels, groups = np.asarray(labels), np.asarray(groups)
    group_labels = pd.Series(labels).groupby(groups).first()
    check_class_counts(group_labels.to_numpy(), 3 if val_fraction else 2, "groups (patients)")
    rest, test = _group_holdout(labels, groups, test_fraction, seed)
    val = np.array([], dtype=int)
    if val_fraction:
        keep, held = _group_holdout(labels[rest], groups[rest], val_fraction / (1 - test_fraction), seed)
        rest, val = rest[keep], rest[held]
    return {"train": np.sort(rest), "val": np.sort(val), "test": np.sort(test)}


def official_split(split_column: np.ndarray) -> Indices:
    """The download's own splits (chest X-ray folders, COVID-CT lists, MedMNIST arrays)."""
    split_column = np.asarray(split_column)
    present = set(split_column.tolist())
    if not {"train", "test"} <= present:
        raise DatasetError(f"this dataset has no official train/test split (it has {sorted(present)}); "
                           "use the 'stratified' or 'grouped' strategy")
    return {name: np.flatnonzero(split_column == name) for name in SPLIT_NAMES}


def check_strategy(strategy: str, val_fraction: float, test_fraction: float) -> None:
    """Fail before any work starts on a split request that can never succeed."""
    if strategy not in STRATEGIES:
        raise DatasetError(f"unknown split strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if strategy != "official":
        _check_fractions(val_fraction, test_fraction)


def make_split(index: pd.DataFrame, strategy: str, val_fraction: float, test_fraction: float, seed: int) -> Indices:
    """Indices into ``index`` (a ``read_index`` frame: split, id, label, group) for train/val/test."""
    check_strategy(strategy, val_fraction, test_fraction)
    if strategy == "official":
        return official_split(index["split"].to_numpy())
    if strategy == "stratified":
        return stratified_split(index["label"].to_numpy(), val_fraction, test_fraction, seed)
    return grouped_split(index["label"].to_numpy(), index["group"].to_numpy(), val_fraction, test_fraction, seed)
