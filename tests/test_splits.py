"""Splits: fractions, stratification, no patient in two splits or folds, official splits, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jaxprobe.data import splits
from jaxprobe.errors import DatasetError
from jaxprobe.stats.folds import kfold


def _dataset(n_groups: int = 60, seed: int = 0) -> pd.DataFrame:
    """Patients with 1-4 images each and one class per patient, like BUSI or chest X-ray."""
    rng = np.random.default_rng(seed)
    per_group = rng.integers(1, 5, n_groups)
    groups = np.repeat([f"p{g}" for g in range(n_groups)], per_group)
    labels = np.repeat(np.arange(n_groups) % 3, per_group)
    return pd.DataFrame({"split": "full", "id": [f"img{i}" for i in range(len(labels))], "label": labels,
                         "group": groups})


def _partition_ok(assignment: dict[str, np.ndarray], n: int) -> None:
    every = np.concatenate(list(assignment.values()))
    assert len(every) == n and len(np.unique(every)) == n


def test_stratified_split_fractions_and_class_balance():
    index = _dataset()
    assignment = splits.make_split(index, "stratified", 0.1, 0.2, seed=3)
    _partition_ok(assignment, len(index))
    assert abs(len(assignment["test"]) / len(index) - 0.2) < 0.02
    overall = np.bincount(index.label) / len(index)
    test_share = np.bincount(index.label.iloc[assignment["test"]], minlength=3) / len(assignment["test"])
    np.testing.assert_allclose(test_share, overall, atol=0.05)


def test_split_is_seeded():
    index = _dataset()
    a, b = (splits.make_split(index, "grouped", 0.1, 0.2, seed=1) for _ in range(2))
    c = splits.make_split(index, "grouped", 0.1, 0.2, seed=2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test"], c["test"])


def test_grouped_split_never_shares_a_patient():
    index = _dataset()
    assignment = splits.make_split(index, "grouped", 0.15, 0.25, seed=0)
    _partition_ok(assignment, len(index))
    groups = {name: set(index.group.iloc[rows]) for name, rows in assignment.items()}
    assert not (groups["train"] & groups["val"] or groups["train"] & groups["test"] or groups["val"] & groups["test"])
    assert 0.15 < len(assignment["test"]) / len(index) < 0.35
    assert set(index.label.iloc[assignment["test"]]) == {0, 1, 2}


def test_stratified_split_leaks_patients_that_grouped_keeps_apart():
    index = _dataset()
    assignment = splits.make_split(index, "stratified", 0.0, 0.3, seed=0)
    shared = set(index.group.iloc[assignment["train"]]) & set(index.group.iloc[assignment["test"]])
    assert shared  # the leakage the grouped strategy exists to prevent


@pytest.mark.parametrize("grouped", [False, True])
def test_kfold_partitions_and_respects_groups(grouped):
    index = _dataset()
    folds = kfold(index.label.to_numpy(), 5, seed=0, groups=index.group.to_numpy() if grouped else None)
    held = np.concatenate([held for _, held in folds])
    assert len(folds) == 5 and np.array_equal(np.sort(held), np.arange(len(index)))
    for train, held_out in folds:
        assert not set(train) & set(held_out)
        if grouped:
            assert not set(index.group.iloc[train]) & set(index.group.iloc[held_out])


def test_official_split_kept():
    index = pd.DataFrame({"split": ["train"] * 4 + ["test"] * 2 + ["val"], "id": list("abcdefg"), "label": 0,
                          "group": list("abcdefg")})
    assignment = splits.make_split(index, "official", 0.1, 0.2, seed=0)
    assert assignment["train"].tolist() == [0, 1, 2, 3] and assignment["test"].tolist() == [4, 5]
    assert assignment["val"].tolist() == [6]


def test_bad_split_requests_are_explained():
    index = _dataset()
    with pytest.raises(DatasetError, match="no official train/test split"):
        splits.make_split(index, "official", 0.1, 0.2, seed=0)
    with pytest.raises(DatasetError, match="unknown split strategy"):
        splits.make_split(index, "random", 0.1, 0.2, seed=0)
    with pytest.raises(DatasetError, match="val \\+ test < 1"):
        splits.make_split(index, "stratified", 0.5, 0.6, seed=0)
    tiny = index[index.label != 2].copy()
    tiny.loc[tiny.index[0], "label"] = 2  # one lonely sample of class 2
    with pytest.raises(DatasetError, match="class 2 has 1 images; each class needs at least 3 images"):
        splits.make_split(tiny, "stratified", 0.1, 0.2, seed=0)
