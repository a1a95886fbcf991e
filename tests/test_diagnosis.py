"""Each failure mode shows on a curve built to have it, and none on a healthy curve."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jaxprobe.scoring.curves import selected_curve, site_module
from jaxprobe.scoring.diagnosis import Thresholds, diagnose

HEALTHY = {"vision": [0.80, 0.86, 0.90], "connector": [0.90], "llm_image": [0.90, 0.91, 0.91],
           "llm_last": [0.85, 0.89, 0.90], "answer": [0.90]}
SITE_NAMES = {"vision": "vision.layer_{:02d}", "connector": "connector.output",
              "llm_image": "llm.layer_{:02d}.image_mean", "llm_last": "llm.layer_{:02d}.last_token", "answer": "answer"}


def _probe_rows(curves: dict[str, list[float]], half_width: float = 0.01) -> pd.DataFrame:
    rows = []
    for module, values in curves.items():
        for layer, accuracy in enumerate(values):
            rows.append({"site": SITE_NAMES[module].format(layer), "kind": "logistic", "selected": True,
                         "accuracy": accuracy, "ci_low": accuracy - half_width, "ci_high": accuracy + half_width,
                         "control_accuracy": 0.5, "perm_p": 0.01})
    shuffled = pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # order must come from the site names
    return pd.concat([shuffled, shuffled.assign(kind="ridge")], ignore_index=True)


def _flags(curves, thresholds: Thresholds | None = None):
    thresholds = thresholds or Thresholds()
    return {v.mode: v for v in diagnose(selected_curve(_probe_rows(curves), "logistic"), thresholds)}


def test_healthy_curve_has_no_failure_mode():
    assert not any(v.flagged for v in _flags(HEALTHY).values())


def test_each_failure_mode_is_found():
    weak_vision = dict(HEALTHY, vision=[0.6, 0.65, 0.70])
    assert _flags(weak_vision)["visual representation quality"].flagged
    assert _flags(HEALTHY, Thresholds(reference_accuracy=0.95))["visual representation quality"].flagged

    lossy_connector = dict(HEALTHY, connector=[0.84])
    verdict = _flags(lossy_connector)["connector projection fidelity"]
    assert verdict.flagged and verdict.points == pytest.approx(-6.0) and verdict.significant

    dip = dict(HEALTHY, llm_image=[0.90, 0.78, 0.90])
    verdict = _flags(dip)["LLM comprehension deficit"]
    assert verdict.flagged and "drop-then-recover" in verdict.evidence and verdict.sites[1] == "llm.layer_01.image_mean"

    misaligned = dict(HEALTHY, answer=[0.62])
    verdict = _flags(misaligned)["semantic-mapping misalignment"]
    assert verdict.flagged and verdict.points == pytest.approx(-28.0) and "lower" in verdict.evidence


def test_small_effects_inside_intervals_are_not_significant():
    curve = selected_curve(_probe_rows(dict(HEALTHY, connector=[0.885]), 0.05), "logistic")
    verdict = {v.mode: v for v in diagnose(curve, Thresholds(connector_drop=0.01))}["connector projection fidelity"]
    assert verdict.flagged and verdict.significant is False


def test_curve_is_in_model_order_and_names_are_checked():
    curve = selected_curve(_probe_rows(HEALTHY), "logistic")
    assert curve.site.tolist()[:4] == ["vision.layer_00", "vision.layer_01", "vision.layer_02", "connector.output"]
    assert curve.site.tolist()[-1] == "answer"
    assert site_module("llm.layer_11.last_token") == ("llm_last", 11)
    with pytest.raises(ValueError, match="naming"):
        site_module("llm.11")
    with pytest.raises(ValueError, match="lacks modules"):
        diagnose(curve[curve.module != "answer"], Thresholds())
    assert np.isclose(curve.accuracy.iloc[0], 0.80)
