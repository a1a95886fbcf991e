"""The study's Feature Health Score (PAPER.md) and the plain-language indicators built from the same curve.

For a module M (vision, connector, LLM) with layer-wise probe accuracies P(M, i) and P_start, P_end, P_min
its first, last and lowest values::

    FHS_M = P_end * (1 + GF) * VP
    GF    = ln(P_end / sqrt(P_start * P_min))                  # task-relevance gain (growth factor)
    VP    = exp(-lambda * sum_i |P(i+1) - P(i)| / P_end)      # cross-layer consistency (volatility penalty)

Accuracies are clipped below at ``floor`` before the logarithm: the formula is undefined at P = 0 (a probe
that never predicts right), and a finite floor keeps one dead layer from making the score infinite.
"""

from __future__ import annotations

import dataclasses

import numpy as np

DEFAULT_LAMBDA = 0.2
DEFAULT_FLOOR = 1e-3


@dataclasses.dataclass(frozen=True)
class ModuleHealth:
    """FHS and its parts for one module's accuracy curve."""

    fhs: float
    growth_factor: float
    volatility_penalty: float
    start: float
    end: float
    minimum: float
    total_variation: float
    layers: int


def module_health(curve: np.ndarray | list[float], lam: float = DEFAULT_LAMBDA,
                  floor: float = DEFAULT_FLOOR) -> ModuleHealth:
    """FHS of one module from its layer-wise accuracies (at least one layer)."""
    values = np.asarray(curve, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"a module curve needs one or more accuracies, got shape {values.shape}")
    if np.isnan(values).any():
        raise ValueError("a module curve holds NaN accuracies: a site was not probed")
    clipped = np.clip(values, floor, 1.0)
    start, end, minimum = clipped[0], clipped[-1], clipped.min()
    variation = float(np.abs(np.diff(values)).sum())
    growth = float(np.log(end / np.sqrt(start * minimum)))
    penalty = float(np.exp(-lam * variation / end))
    return ModuleHealth(float(end * (1 + growth) * penalty), growth, penalty, float(values[0]), float(values[-1]),
                        float(values.min()), variation, int(values.size))


def retention(previous_end: float, next_end: float) -> float:
    """Share of the accuracy at one module's end that is still there at the next module's end."""
    return float(next_end / previous_end) if previous_end > 0 else float("nan")
