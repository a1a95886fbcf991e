"""score_run: the FHS profile, the answer's accuracy recomputed from the index, and answer calibration."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from jaxprobe.scoring.diagnosis import Thresholds
from jaxprobe.scoring.fhs import module_health
from jaxprobe.scoring.profile import score_run
from tests.test_diagnosis import HEALTHY, _probe_rows


def _index() -> pd.DataFrame:
    labels = np.arange(40) % 2
    predictions = labels.copy()
    predictions[:6] = 1 - predictions[:6]  # 6 wrong answers among the 20 test rows below
    probability = np.where(np.arange(40) < 3, 0.95, 0.6)  # 3 of the wrong ones were confident
    return pd.DataFrame({"row": np.arange(40), "id": [f"i{k}" for k in range(40)], "label": labels,
                         "split": np.where(np.arange(40) < 20, "test", "train"), "group": "g",
                         "answer_pred": predictions, "answer_prob": probability})


def test_profile_and_answer():
    probes = _probe_rows({k: v for k, v in HEALTHY.items() if k != "answer"})
    scores = score_run(probes, _index(), "logistic", Thresholds(), resamples=200)
    assert scores["profile"]["final"] == pytest.approx(14 / 20)
    assert scores["profile"]["vision"] == pytest.approx(module_health(HEALTHY["vision"]).fhs)
    assert scores["profile"]["connector"] == pytest.approx(0.90)
    assert scores["retention"]["vision_to_connector"] == pytest.approx(1.0)
    assert scores["calibration"]["confident_answers"] == 3 and scores["calibration"]["confident_wrong_rate"] == 1.0
    flagged = {v["mode"]: v["flagged"] for v in scores["diagnosis"]}
    assert flagged["semantic-mapping misalignment"] and not flagged["connector projection fidelity"]
    assert scores["curve"][-1]["site"] == "answer"
    json.dumps(scores)  # everything is JSON-serialisable for scores.json
