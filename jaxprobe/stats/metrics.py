"""Classification metrics, vectorised over any leading axes (sites x lambdas x folds ...).

scikit-learn computes these one probe at a time; a study cell has thousands of probes, so here every metric
takes scores [..., M, C] and labels [M] and returns arrays shaped [...]. Definitions follow scikit-learn's
(macro averages over classes; AUROC one-vs-rest, macro) and are tested against it.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from jaxprobe.stats.calibration import expected_calibration_error


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(-1, keepdims=True)


def confusion(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion counts [..., C_true, C_pred]."""
    true = np.eye(num_classes)[labels]  # [M, C]
    pred = np.eye(num_classes)[predictions]  # [..., M, C]
    return np.einsum("mt,...mp->...tp", true, pred)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=float), where=denominator > 0)


def per_class_recall(matrix: np.ndarray) -> np.ndarray:
    return _safe_divide(np.diagonal(matrix, axis1=-2, axis2=-1), matrix.sum(-1))


def macro_f1(matrix: np.ndarray) -> np.ndarray:
    hits = np.diagonal(matrix, axis1=-2, axis2=-1)
    f1 = _safe_divide(2 * hits, matrix.sum(-1) + matrix.sum(-2))
    return f1.mean(-1)


def auroc_ovr(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Macro one-vs-rest AUROC from ranks (Mann-Whitney U), over classes present in ``labels``."""
    ranks = stats.rankdata(scores, axis=-2)  # [..., M, C], ties averaged
    aucs = []
    for k in range(num_classes):
        positive = labels == k
        n_pos, n_neg = positive.sum(), (~positive).sum()
        if n_pos == 0 or n_neg == 0:
            continue
        rank_sum = ranks[..., positive, k].sum(-1)
        aucs.append((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    if not aucs:
        return np.full(scores.shape[:-2], np.nan)
    if num_classes == 2:  # scikit-learn's binary AUROC uses the positive class only
        return aucs[-1]
    return np.mean(aucs, axis=0)


def log_loss(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    picked = np.take_along_axis(probs, np.broadcast_to(labels[:, None], (*probs.shape[:-1], 1)), -1)[..., 0]
    return -np.log(np.clip(picked, 1e-15, 1.0)).mean(-1)



def classification_metrics(scores: np.ndarray, labels: np.ndarray, num_classes: int,
                           probabilistic: bool) -> dict[str, np.ndarray]:
    """All metrics of ``scores`` [..., M, C]; log-loss and ECE only where scores are logits of probabilities."""
    labels = np.asarray(labels)
    predictions = scores.argmax(-1)
    matrix = confusion(predictions, labels, num_classes)
    recall = per_class_recall(matrix)
    present = np.bincount(labels, minlength=num_classes) > 0
    result = {
        "accuracy": (predictions == labels).mean(-1),
        "balanced_accuracy": recall[..., present].mean(-1),
        "macro_f1": macro_f1(matrix),
        "auroc": auroc_ovr(softmax(scores) if probabilistic else scores, labels, num_classes),
    }
    probs = softmax(scores) if probabilistic else None
    result["log_loss"] = log_loss(probs, labels) if probabilistic else np.full(predictions.shape[:-1], np.nan)
    result["ece"] = expected_calibration_error(probs, labels) if probabilistic else np.full(
        predictions.shape[:-1], np.nan)
    for k in range(num_classes):
        result[f"recall_{k}"] = recall[..., k]
    return result
