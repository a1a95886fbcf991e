"""Top-label expected calibration error (ECE).

ECE needs only each prediction's confidence (the probability given to the predicted class) and whether it was
right. Working from (confidence, correct) rather than from a probability matrix keeps callers that only know
the top probability (the zero-shot answer) from rebuilding a fake two-class matrix, which is wrong for three or
more classes: a [p, 1 - p] row turns p < 0.5 into a confident prediction of the other column.
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15


def top_label_ece(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """sum_b |sum_{i in b} (confidence_i - correct_i)| / M over equal-width confidence bins, for [..., M] inputs."""
    confidence = np.asarray(confidence, float)
    correct = np.asarray(correct, float)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    onehot = np.eye(bins)[which]  # [..., M, B]
    gap = np.abs((onehot * (confidence - correct)[..., None]).sum(-2))
    return gap.sum(-1) / confidence.shape[-1]


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """Top-label ECE of class probabilities [..., M, C] against labels [M]."""
    return top_label_ece(probs.max(-1), probs.argmax(-1) == labels, bins)
