"""score_run: the FHS profile, the answer's accuracy recomputed from the index, and answer calibration."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from jaxprobe.scoring.diagnosis import Thresholds
from jaxprobe.scoring.fhs import module_health
from jaxprobe.scoring.profile import ScoreSettings, score_run
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
    settings = ScoreSettings("logistic", Thresholds(min_test_images=20), resamples=200)
    scores = score_run(probes, _index(), settings, ["no", "yes"])
    assert scores["profile"]["final"] == pytest.approx(14 / 20)
    assert scores["profile"]["vision"] == pytest.approx(module_health(HEALTHY["vision"]).fhs)
    assert scores["profile"]["connector"] == pytest.approx(0.90)
    assert scores["retention"]["vision_to_connector"] == pytest.approx(1.0)
    assert scores["calibration"]["confident_answers"] == 3 and scores["calibration"]["confident_wrong_rate"] == 1.0
    status = {v["mode"]: v["status"] for v in scores["diagnosis"]}
    assert status["semantic-mapping misalignment"] == "inconclusive"  # 14/20 vs 0.90: not separable on 20 images
    assert status["connector projection fidelity"] == "not flagged"
    assert scores["curve"][-1]["site"] == "answer"
    assert scores["test"] == {"size": 20, "chance": 0.5, "level": 0.95}
    assert scores["split_counts"] == {"test": {"no": 10, "yes": 10}, "train": {"no": 10, "yes": 10}}
    assert scores["answer"]["confusion"] == [[7, 3], [3, 7]] and scores["answer"]["recall"] == {"no": 0.7, "yes": 0.7}
    assert scores["missing_modules"] == [] and scores["unplaced_sites"] == []
    json.dumps(scores)  # everything is JSON-serialisable for scores.json


def test_answer_ece_with_three_classes_by_hand():
    """Top-label ECE from (p, correct): 10 answers at p = 0.4 with 2 right, 10 at p = 0.6 with 8 right.

    By hand: bin 0.4 has |0.4 - 0.2| = 0.2, bin 0.6 has |0.6 - 0.8| = 0.2, so ECE = (10 * 0.2 + 10 * 0.2) / 20 = 0.2.
    A [p, 1 - p] two-column rebuild puts both groups in the 0.6 bin, where the gaps cancel to 0.
    """
    labels = np.arange(20) % 3
    right = np.r_[np.arange(10) < 2, np.arange(10) < 8]
    index = pd.DataFrame({"row": np.arange(20), "id": [f"i{k}" for k in range(20)], "label": labels,
                          "split": "test", "group": "g", "answer_pred": np.where(right, labels, (labels + 1) % 3),
                          "answer_prob": np.r_[np.full(10, 0.4), np.full(10, 0.6)]})
    from jaxprobe.scoring.profile import answer_calibration

    assert answer_calibration(index)["ece"] == pytest.approx(0.2)


def test_generated_answer_is_p_final_with_unparseable_replies_counted_wrong():
    """The study's P_final is the generated reply; the option-score answer and its own mapping verdict stay beside."""
    index = _index()
    generated = index["label"].to_numpy().copy()
    generated[:4] = -1  # 4 unparseable replies among the test rows
    generated[4:9] = 1 - generated[4:9]  # and 5 wrong ones: 11 of 20 right
    index = index.assign(generated_pred=generated, generated_text=["I am not sure"] * 4 + ["B"] * 36,
                         generated_how=["no option letter or class name"] * 4 + ["letter"] * 36)
    probes = _probe_rows({k: v for k, v in HEALTHY.items() if k != "answer"})
    scores = score_run(probes, index, ScoreSettings("logistic", Thresholds(min_test_images=20), resamples=200),
                       ["no", "yes"])
    assert scores["profile"]["final"] == pytest.approx(11 / 20) and scores["final_source"] == "generated reply"
    assert scores["generated"]["unparseable"] == 4 and scores["generated"]["unparseable_rate"] == pytest.approx(0.2)
    assert scores["generated"]["confusion"] == [[5, 3, 2], [2, 6, 2]]  # last column: unparseable
    assert scores["generated"]["examples"] == ["I am not sure"] * 3
    verdicts = {v["mode"]: v for v in scores["diagnosis"]}
    assert verdicts["semantic-mapping misalignment"]["sites"][1] == "answer.generated"
    assert verdicts["option-score semantic mapping"]["sites"][1] == "answer"
    answer_sites = [row["site"] for row in scores["curve"] if row["site"].startswith("answer")]
    assert answer_sites == ["answer", "answer.generated"]
    json.dumps(scores)


def test_reliability_across_answer_variants():
    index = _index()
    test = index["split"] == "test"
    main = index["answer_pred"].to_numpy()
    flipped = main.copy()
    flipped[:5] = 1 - flipped[:5]  # 5 of the 20 test images change their answer when the options are reordered
    index = index.assign(variant_order1_pred=flipped, variant_paraphrase1_pred=main)
    probes = _probe_rows({k: v for k, v in HEALTHY.items() if k != "answer"})
    scores = score_run(probes, index, ScoreSettings("logistic", Thresholds(min_test_images=20), resamples=50),
                       ["no", "yes"])
    found = scores["reliability"]
    assert found["all_agree"] == pytest.approx(15 / 20)
    assert found["pairwise_agreement"] == pytest.approx((15 / 20 + 20 / 20 + 15 / 20) / 3)
    labels = index.loc[test, "label"].to_numpy()
    assert found["variants"]["order1"] == pytest.approx((flipped[test.to_numpy()] == labels).mean())
    assert set(found["variants"]) == {"main", "order1", "paraphrase1"}
