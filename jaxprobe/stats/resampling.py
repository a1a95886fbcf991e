"""Bootstrap intervals and permutation p-values, vectorised over sites."""

from __future__ import annotations

import numpy as np


def permutation_p_value(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """One-sided p-values [S] of ``observed`` [S] against ``null`` [S, P] (NaN when there is no null).

    ``(1 + #{null >= observed}) / (1 + P)``: never zero, so the smallest reachable p is 1 / (1 + P).
    """
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
