"""Stratified (group) k-fold indices, for model selection inside a training split.

Built on scikit-learn's splitters. The grouped variant keeps every group (patient) on one side of every fold,
the leakage that inflates cross-validated accuracy on datasets with several images per patient.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from jaxprobe.errors import DatasetError

Folds = list[tuple[np.ndarray, np.ndarray]]


def check_class_counts(labels: np.ndarray, minimum: int, what: str) -> None:
    """Refuse classes with fewer than ``minimum`` members, naming each such class, its count and what would work."""
    values, counts = np.unique(labels, return_counts=True)
    small = {int(v): int(c) for v, c in zip(values, counts, strict=True) if c < minimum}
    if small:
        fewest = min(small.values())
        advice = f"set probe.folds={fewest} or fewer" if fewest >= 2 else "fewer folds cannot help (k-fold needs 2)"
        raise DatasetError(f"classes {small} (label: count) have fewer than {minimum} {what}: {advice}, or merge or "
                           "drop those classes, or move more of their images into the training split")


def kfold(labels: np.ndarray, n_folds: int, seed: int, groups: np.ndarray | None = None) -> Folds:
    """Stratified (group) k-fold ``(train, held_out)`` index pairs."""
    labels = np.asarray(labels)
    if groups is None:
        check_class_counts(labels, n_folds, "samples for that many folds")
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(len(labels)), labels))
    group_labels = pd.Series(labels).groupby(np.asarray(groups)).first()
    check_class_counts(group_labels.to_numpy(), n_folds, "groups for that many folds")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" is checked above
        return list(splitter.split(np.zeros(len(labels)), labels, groups))
