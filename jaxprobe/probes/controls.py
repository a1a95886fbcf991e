"""Controls that say whether a probe's accuracy means anything.

- control task (Hewitt & Liang 2019): every group (patient) gets a random label, class balance kept; a probe that
  fits this as well as the real task is memorising, not reading the representation. selectivity = real - control.
- permutation null: train labels permuted; p = (1 + #{null >= observed}) / (1 + permutations).
- bootstrap: percentile interval of test accuracy over resampled test rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def control_labels(labels: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shuffle the label of whole groups among groups: same class balance over groups, no link to the image."""
    group_ids, first = np.unique(groups, return_index=True)
    shuffled = rng.permutation(labels[first])
    lookup = pd.Series(shuffled, index=group_ids)
    return lookup.loc[groups].to_numpy()


def permuted_labels(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """[count, N] independent permutations of ``labels``."""
    return np.stack([rng.permutation(labels) for _ in range(count)]) if count else np.empty((0, len(labels)), int)


def permutation_p_value(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """One-sided p-values [S] of ``observed`` [S] against ``null`` [S, P] (NaN when there is no null)."""
    if null.shape[-1] == 0:
        return np.full(observed.shape, np.nan)
    return (1 + (null >= observed[:, None]).sum(-1)) / (1 + null.shape[-1])


def bootstrap_interval(correct: np.ndarray, resamples: int, level: float,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of mean(correct) per row of ``correct`` [S, M], same resampled rows for every site."""
    if resamples == 0:
        nan = np.full(correct.shape[0], np.nan)
        return nan, nan
    rows = rng.integers(0, correct.shape[1], (resamples, correct.shape[1]))
    means = correct[:, rows].mean(-1)  # [S, B]
    tail = (1 - level) / 2
    return np.quantile(means, tail, axis=-1), np.quantile(means, 1 - tail, axis=-1)
