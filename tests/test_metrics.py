"""Vectorised metrics equal scikit-learn's, probe by probe."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from jaxprobe.stats.calibration import expected_calibration_error
from jaxprobe.stats.metrics import classification_metrics, softmax


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_metrics_match_sklearn(classes):
    rng = np.random.default_rng(classes)
    labels = rng.integers(0, classes, 80)
    scores = rng.normal(size=(3, 4, 80, classes)) + np.eye(classes)[labels]
    ours = classification_metrics(scores, labels, classes, probabilistic=True)
    for i, j in np.ndindex(3, 4):
        probs, predicted = softmax(scores[i, j]), scores[i, j].argmax(-1)
        auroc = (sk.roc_auc_score(labels, probs[:, 1]) if classes == 2
                 else sk.roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
        expected = {"accuracy": sk.accuracy_score(labels, predicted),
                    "balanced_accuracy": sk.balanced_accuracy_score(labels, predicted),
                    "macro_f1": sk.f1_score(labels, predicted, average="macro"), "auroc": auroc,
                    "log_loss": sk.log_loss(labels, probs, labels=list(range(classes)))}
        recalls = sk.recall_score(labels, predicted, average=None, labels=list(range(classes)))
        for name, value in expected.items():
            assert ours[name][i, j] == pytest.approx(value, abs=1e-9), name
        for k in range(classes):
            assert ours[f"recall_{k}"][i, j] == pytest.approx(recalls[k])


def test_ece_by_hand():
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 0, 1])
    # bins: 0.95 -> two samples, accuracy 0.5, gap 0.45; 0.6 -> gap 0.4; 0.7 -> gap 0.3
    assert expected_calibration_error(probs, labels) == pytest.approx((2 * 0.45 + 0.4 + 0.3) / 4)


def test_decision_values_have_no_probabilistic_metrics():
    values = classification_metrics(np.random.default_rng(0).normal(size=(5, 2)), np.array([0, 1, 0, 1, 1]), 2,
                                    probabilistic=False)
    assert np.isnan(values["log_loss"]) and np.isnan(values["ece"]) and 0 <= values["auroc"] <= 1


def test_top_label_ece_equals_the_probability_form():
    from jaxprobe.stats.calibration import top_label_ece

    rng = np.random.default_rng(0)
    probs = softmax(rng.normal(size=(4, 50, 3)) * 2)
    labels = rng.integers(0, 3, 50)
    expected = expected_calibration_error(probs, labels)
    assert top_label_ece(probs.max(-1), probs.argmax(-1) == labels) == pytest.approx(expected)
