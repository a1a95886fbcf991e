"""Controls that say whether a probe's accuracy means anything.

- control task (Hewitt & Liang 2019): every group (patient) gets a random label, class balance kept; a probe that
  fits this as well as the real task is memorising, not reading the representation. selectivity = real - control.
- permutation null: train labels permuted (p-values in ``jaxprobe.stats.resampling``).
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
