"""Controls that say whether a probe's accuracy means anything, each able to come out against the probe.

- Control task (capacity; Hewitt & Liang 2019 in spirit): every training image gets a random label (the training
  labels permuted: class balance kept, no link to the image), and the site's selected probe (same kind, same
  lambda) is fitted to it. Its accuracy on its own training rows (``control_accuracy``) is what the probe reaches
  by memorising alone; ``selectivity = train_accuracy - control_accuracy`` is how much better the real labels fit
  than labels without structure. It is ~0 on a site without signal, and also where the probe is so flexible that
  it fits anything (then its training fit says nothing about the representation) -- it can fail. It says nothing
  about generalisation: that is what test accuracy, its interval and ``perm_p`` are for. (A control task drawn
  per patient and scored on held-out patients, as before, was at chance by construction: it could not fail.)
- Permutation p-value (``perm_p``): the test labels are permuted among exchangeable test groups (groups of the same
  size swap their label vectors, so patients stay whole and class counts stay put), and the selected probe's
  test *balanced* accuracy is compared with its null. The probe never saw the test labels, so under "features
  carry no label information" its predictions are independent of them and the test is exact; no refit is
  needed, so thousands of permutations cost milliseconds. Balanced accuracy keeps the null from collapsing onto
  the majority rate on imbalanced data (a probe that always answers the majority class gets p = 1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def control_labels(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random labels per image with the class balance of ``labels`` (a permutation of them)."""
    return rng.permutation(labels)


def group_permutations(groups: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """[count, M] row indices: permutation k gives row m the label of row ``result[k, m]``.

    Groups of equal size are permuted among themselves, carrying their rows' labels in order, so each group's
    labels stay together and the label multiset is unchanged.
    """
    codes = pd.factorize(pd.Series(groups))[0]
    result = np.broadcast_to(np.arange(len(groups)), (count, len(groups))).copy()
    sizes = np.bincount(codes)
    order = np.argsort(codes, kind="stable")  # rows grouped, each group's rows in order
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for size in np.unique(sizes):
        members = np.flatnonzero(sizes == size)
        if len(members) < 2:
            continue
        rows = order[starts[members][:, None] + np.arange(size)]  # [groups, size]
        shuffles = np.argsort(rng.random((count, len(members))), axis=1)
        result[:, rows.ravel()] = rows[shuffles].reshape(count, -1)
    return result


def balanced_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Mean recall over the classes present, for predictions [..., M] against label sets [K, M] (or [M]):
    result [..., K]."""
    labels = np.atleast_2d(labels)
    recall_sum, classes_present = 0.0, 0
    for c in range(num_classes):
        truth = (labels == c).astype(np.float32)  # [K, M]
        count = truth.sum(-1)
        hits = (predictions == c).astype(np.float32) @ truth.T  # [..., K]
        recall_sum = recall_sum + hits / np.maximum(count, 1)
        classes_present = classes_present + (count > 0)
    return recall_sum / classes_present


def permutation_p_values(predictions: np.ndarray, labels: np.ndarray, groups: np.ndarray, num_classes: int,
                         count: int, rng: np.random.Generator) -> np.ndarray:
    """p-values [S] of each site's test balanced accuracy (predictions [S, M]) against ``count`` group
    permutations of the test labels: (1 + #{null >= observed}) / (1 + count), NaN when count is 0."""
    if count == 0:
        return np.full(predictions.shape[0], np.nan)
    observed = balanced_accuracy(predictions, labels, num_classes)[:, 0]
    null = balanced_accuracy(predictions, labels[group_permutations(groups, count, rng)], num_classes)
    return (1 + (null >= observed[:, None] - 1e-9).sum(-1)) / (1 + count)
