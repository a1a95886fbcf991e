"""Confidence intervals for a proportion (an accuracy) that stay honest on small test sets.

The percentile bootstrap that probes report collapses to a point when every test image is right (or wrong):
4 of 4 correct gives [1, 1], which "separates" from almost anything. The Wilson score interval does not
collapse, so diagnosis compares intervals that are at least as wide as Wilson's.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def wilson_interval(accuracy: float, n: int, level: float) -> tuple[float, float]:
    """Wilson score interval (scipy's) of a proportion ``accuracy`` observed on ``n`` trials at ``level``."""
    if n <= 0:
        return 0.0, 1.0
    interval = stats.binomtest(round(accuracy * n), n).proportion_ci(confidence_level=level, method="wilson")
    return float(interval.low), float(interval.high)


def widened_interval(accuracy: float, low: float, high: float, n: int, level: float) -> tuple[float, float]:
    """The union of a reported (bootstrap) interval and the Wilson interval; NaN bounds fall back to Wilson."""
    wilson_low, wilson_high = wilson_interval(accuracy, n, level)
    if np.isnan(low) or np.isnan(high):
        return wilson_low, wilson_high
    return float(min(low, wilson_low)), float(max(high, wilson_high))
