"""Train/val/test indices: seeded, stratified, optionally patient-grouped, or the official ones.

Everything is built on scikit-learn's ``model_selection`` splitters. Grouped variants guarantee that no group
(patient) lands in two splits, the leakage that inflates accuracy on BUSI and COVID19-CT. A request the data
cannot meet (a class with too few images or patients, a fraction too small to hold one image of each class) is
refused before scikit-learn sees it, naming the class, its count and a setting that would work.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from jaxprobe.errors import DatasetError

SPLIT_NAMES = ("train", "val", "test")
STRATEGIES = ("stratified", "grouped", "official")

Indices = dict[str, np.ndarray]


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 <= val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DatasetError(f"need 0 <= val < 1, 0 < test < 1 and val + test < 1; got {val_fraction}, {test_fraction}")


def _class_name(label: int, class_names: Sequence[str] | None) -> str:
    return repr(class_names[label]) if class_names is not None and 0 <= label < len(class_names) else f"class {label}"


def check_split_counts(labels: np.ndarray, val_fraction: float, unit: str,
                       class_names: Sequence[str] | None = None) -> None:
    """Every class needs one member (image, or patient when grouped) per split; say which do not and what works."""
    need = 3 if val_fraction else 2
    values, counts = np.unique(labels, return_counts=True)
    small = [(int(v), int(c)) for v, c in zip(values, counts, strict=True) if c < need]
    if not small:
        return
    listed = ", ".join(f"{_class_name(v, class_names)} has {c} {unit}" for v, c in small)
    advice = "merge or drop those classes, or add images"
    if val_fraction and min(c for _, c in small) >= 2:
        advice = "set split.val_fraction=0 (probes select lambda by k-fold on train), or " + advice
    raise DatasetError(f"too few for a train/{'val/' if val_fraction else ''}test split: {listed}; each class "
                       f"needs at least {need} {unit}, one per split: {advice}")


def _check_holdout_size(total: int, fraction: float, num_classes: int, what: str, key: str) -> None:
    """A stratified hold-out of ``fraction`` of ``total`` must hold one of each class, and leave one of each."""
    held = math.ceil(fraction * total)
    if held < num_classes or total - held < num_classes:
        need = num_classes / total
        raise DatasetError(f"{key}={fraction:g} holds out {held} of {total} {what} for {num_classes} classes, but a "
                           f"stratified hold-out needs at least one of each class on both sides: use {key} between "
                           f"{need:.3f} and {1 - need:.3f}")


def stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int,
                     class_names: Sequence[str] | None = None) -> Indices:
    """Class-stratified random train/val/test indices (sorted)."""
    _check_fractions(val_fraction, test_fraction)
    labels = np.asarray(labels)
    check_split_counts(labels, val_fraction, "images", class_names)
    classes = len(np.unique(labels))
    _check_holdout_size(len(labels), test_fraction, classes, "images", "split.test_fraction")
    if val_fraction:
        rest = len(labels) - math.ceil(test_fraction * len(labels))
        _check_holdout_size(rest, val_fraction / (1 - test_fraction), classes, "non-test images",
                            "split.val_fraction / (1 - split.test_fraction)")
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
    count = len(np.unique(groups))
    if n_splits > count:
        raise DatasetError(f"a grouped hold-out of {fraction:g} needs at least {n_splits} patient groups, but there "
                           f"are {count}: use split fractions of at least {1 / count:.3f}, or more patients")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" is reported by check_class_counts
        keep, held = next(splitter.split(np.zeros(len(labels)), labels, groups))
    return keep, held


def grouped_split(labels: np.ndarray, groups: np.ndarray, val_fraction: float, test_fraction: float,
                  seed: int, class_names: Sequence[str] | None = None) -> Indices:
    """Like ``stratified_split`` but no group in two splits; fractions are met as closely as groups allow."""
    _check_fractions(val_fraction, test_fraction)
    labels, groups = np.asarray(labels), np.asarray(groups)
    group_labels = pd.Series(labels).groupby(groups).first()
    check_split_counts(group_labels.to_numpy(), val_fraction, "patients (groups)", class_names)
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


def make_split(index: pd.DataFrame, strategy: str, val_fraction: float, test_fraction: float, seed: int,
               class_names: Sequence[str] | None = None) -> Indices:
    """Indices into ``index`` (a ``read_index`` frame: split, id, label, group) for train/val/test; ``class_names``
    only make refusals name classes instead of label numbers."""
    check_strategy(strategy, val_fraction, test_fraction)
    if strategy == "official":
        return official_split(index["split"].to_numpy())
    labels = index["label"].to_numpy()
    if strategy == "stratified":
        return stratified_split(labels, val_fraction, test_fraction, seed, class_names)
    return grouped_split(labels, index["group"].to_numpy(), val_fraction, test_fraction, seed, class_names)
