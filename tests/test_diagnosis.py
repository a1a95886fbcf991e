"""Failure-mode verdicts: each mode is found on a curve built to have it, none on a healthy curve, and nothing is
flagged from noise (tiny test sets, overlapping intervals, no signal to lose); no flag contradicts its evidence."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pandas as pd
import pytest

from jaxprobe.scoring.curves import selected_curve, site_module
from jaxprobe.scoring.diagnosis import FLAGGED, INCONCLUSIVE, NOT_FLAGGED, EvalSet, Thresholds, diagnose

HEALTHY = {"vision": [0.80, 0.86, 0.90], "connector": [0.90], "llm_image": [0.90, 0.91, 0.91],
           "llm_last": [0.85, 0.89, 0.90], "answer": [0.90]}
SITE_NAMES = {"vision": "vision.layer_{:02d}", "connector": "connector.output",
              "llm_image": "llm.layer_{:02d}.image_mean", "llm_last": "llm.layer_{:02d}.last_token", "answer": "answer"}
LARGE = EvalSet(size=1000, chance=0.5, level=0.95, permutations=20)  # intervals narrow enough to separate


def _probe_rows(curves: dict[str, list[float]], half_width: float = 0.01, perm_p: float = 0.01) -> pd.DataFrame:
    rows = []
    for module, values in curves.items():
        for layer, accuracy in enumerate(values):
            rows.append({"site": SITE_NAMES[module].format(layer), "kind": "logistic", "selected": True,
                         "accuracy": accuracy, "ci_low": accuracy - half_width, "ci_high": accuracy + half_width,
                         "control_accuracy": 0.5, "perm_p": perm_p})
    shuffled = pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # order must come from the site names
    return pd.concat([shuffled, shuffled.assign(kind="ridge")], ignore_index=True)


def _curve(curves, **kwargs) -> pd.DataFrame:
    return selected_curve(_probe_rows(curves, **kwargs), "logistic")[0]


def _verdicts(curves, thresholds: Thresholds | None = None, test: EvalSet = LARGE, layout=None, **kwargs):
    return {v.mode: v for v in diagnose(_curve(curves, **kwargs), thresholds or Thresholds(), test, layout)}


def test_healthy_curve_has_no_failure_mode():
    verdicts = _verdicts(HEALTHY)
    assert {v.status for v in verdicts.values()} == {NOT_FLAGGED}
    assert all(v.reason for v in verdicts.values())


def test_each_failure_mode_is_found():
    weak_vision = dict(HEALTHY, vision=[0.6, 0.65, 0.70])  # two balanced classes: the bar is 0.5 + 0.5 * 0.5
    verdict = _verdicts(weak_vision)["visual representation quality"]
    assert verdict.flagged and verdict.points == pytest.approx(-5.0) and "bar of 0.750" in verdict.evidence
    assert _verdicts(HEALTHY, Thresholds(reference_accuracy=0.95))["visual representation quality"].flagged

    lossy_connector = dict(HEALTHY, connector=[0.84])
    verdict = _verdicts(lossy_connector)["connector projection fidelity"]
    assert verdict.flagged and verdict.points == pytest.approx(-6.0) and verdict.significant

    dip = dict(HEALTHY, llm_image=[0.90, 0.78, 0.90])
    verdict = _verdicts(dip)["LLM comprehension deficit"]
    assert verdict.flagged and "drop-then-recover" in verdict.evidence and verdict.sites[1] == "llm.layer_01.image_mean"

    misaligned = dict(HEALTHY, answer=[0.62])
    verdict = _verdicts(misaligned)["semantic-mapping misalignment"]
    assert verdict.flagged and verdict.points == pytest.approx(-28.0) and "lower" in verdict.evidence


def test_a_tiny_test_set_makes_every_verdict_inconclusive():
    """Item 9: 4 test images are no evidence, however large the effect looks."""
    broken = dict(HEALTHY, vision=[0.3, 0.3, 0.25], connector=[0.0], answer=[1.0])
    verdicts = _verdicts(broken, test=EvalSet(size=4, chance=0.5, permutations=20), half_width=0.0)
    for verdict in verdicts.values():
        assert verdict.status == INCONCLUSIVE and not verdict.flagged
        assert verdict.reason.startswith("only 4 test images (diagnosis.min_test_images = 30)")


def test_an_effect_inside_overlapping_intervals_is_inconclusive():
    verdicts = _verdicts(dict(HEALTHY, connector=[0.80]), test=EvalSet(size=40, chance=0.5, permutations=20))
    verdict = verdicts["connector projection fidelity"]
    assert verdict.status == INCONCLUSIVE and verdict.significant is False and "intervals overlap" in verdict.reason
    # the bootstrap interval of a perfect probe is [1, 1]; the Wilson interval keeps it from "separating"
    verdict = _verdicts(dict(HEALTHY, vision=[1.0, 1.0, 1.0], connector=[0.9]), half_width=0.0,
                        test=EvalSet(size=40, chance=0.5, permutations=20))["connector projection fidelity"]
    assert verdict.status == INCONCLUSIVE


def test_vision_bar_is_relative_to_chance():
    """Item 9: 0.70 is good for three balanced classes (chance 1/3) and poor for two (chance 1/2)."""
    curves = dict(HEALTHY, vision=[0.60, 0.65, 0.70])
    three = _verdicts(curves, test=dataclasses.replace(LARGE, chance=1 / 3))["visual representation quality"]
    assert three.status == NOT_FLAGGED and "bar of 0.667" in three.evidence
    two = _verdicts(curves, test=LARGE)["visual representation quality"]
    assert two.status == FLAGGED
    skewed = _verdicts(HEALTHY, test=dataclasses.replace(LARGE, chance=0.9))["visual representation quality"]
    assert skewed.status == FLAGGED and "bar of 0.950" in skewed.evidence  # 90% is what "always benign" scores


def test_no_signal_to_lose_is_inconclusive():
    flat_chance = {module: [0.5] * len(values) for module, values in HEALTHY.items()}
    flat_chance["connector"] = [0.40]
    verdicts = _verdicts(flat_chance, perm_p=0.6)
    verdict = verdicts["connector projection fidelity"]
    assert verdict.status == INCONCLUSIVE and "not above chance (permutation p = 0.6" in verdict.reason


def test_llm_verdict_is_judged_from_the_llm_input_and_agrees_with_its_pattern():
    """An LLM that starts 15 points below its input and stays there is a loss, and the evidence says so."""
    verdict = _verdicts(dict(HEALTHY, connector=[0.95], llm_image=[0.80, 0.80, 0.80]))["LLM comprehension deficit"]
    assert verdict.flagged and "declining" in verdict.evidence and verdict.points == pytest.approx(-15.0)


def test_site_layout_names_the_connectors_input():
    curves = dict(HEALTHY, vision=[0.80, 0.91, 0.70], connector=[0.90])  # LLaVA-style: layer -2 feeds the connector
    layout = {"vision_depth": 3, "llm_depth": 3, "connector_source": "vision.layer_01", "vision_pooling": "cls"}
    with_layout = _verdicts(curves, layout=layout)["connector projection fidelity"]
    assert with_layout.status == NOT_FLAGGED and with_layout.sites == ("vision.layer_01", "connector.output")
    assumed = _verdicts(curves)["connector projection fidelity"]
    assert assumed.sites[0] == "vision.layer_02" and "no site_layout: assuming the last vision site" in assumed.evidence


def test_missing_modules_make_their_checks_inconclusive():
    partial = {k: v for k, v in HEALTHY.items() if k in ("vision", "llm_last")}
    verdicts = _verdicts(partial)
    assert verdicts["visual representation quality"].status == NOT_FLAGGED
    for mode in ("connector projection fidelity", "LLM comprehension deficit", "semantic-mapping misalignment"):
        assert verdicts[mode].status == INCONCLUSIVE and "which this run did not probe" in verdicts[mode].reason
        assert verdicts[mode].points is None
    json.dumps([dataclasses.asdict(v) for v in verdicts.values()])


@pytest.mark.parametrize("seed", range(40))
def test_no_flag_contradicts_its_evidence(seed):
    """Random curves: a flagged verdict is significant and beyond its threshold, its evidence shows those points,
    and a verdict that is not flagged is on the healthy side of its threshold."""
    rng = np.random.default_rng(seed)
    curves = {module: rng.uniform(0.3, 1.0, len(values)).round(3).tolist() for module, values in HEALTHY.items()}
    size = int(rng.choice([10, 40, 400, 4000]))
    thresholds = Thresholds()
    limits = {"connector projection fidelity": thresholds.connector_drop, "LLM comprehension deficit":
              thresholds.llm_drop, "semantic-mapping misalignment": thresholds.answer_gap}
    verdicts = _verdicts(curves, test=EvalSet(size, 0.5, permutations=20), perm_p=float(rng.choice([0.01, 0.5])))
    for mode, verdict in verdicts.items():
        shown = re.findall(r"([+-]?\d+\.\d) points", verdict.evidence)
        assert shown and float(shown[-1].lstrip("+")) == pytest.approx(abs(verdict.points) if "semantic" in mode
                                                                        else verdict.points, abs=0.051)
        if mode == "visual representation quality":
            crosses = verdict.points < 0
        elif mode == "semantic-mapping misalignment":
            crosses = abs(verdict.points) > 100 * limits[mode]
        else:
            crosses = -verdict.points > 100 * limits[mode]
        if verdict.status == FLAGGED:
            assert crosses and verdict.significant and size >= thresholds.min_test_images
        if verdict.status == NOT_FLAGGED:
            assert not crosses
        if mode == "LLM comprehension deficit":
            pattern = re.search(r"probes are ([\w-]+)", verdict.evidence).group(1)
            assert (pattern in ("declining", "drop-then-recover")) == crosses


def test_curve_is_in_model_order_and_names_are_checked():
    curve = _curve(HEALTHY)
    assert curve.site.tolist()[:4] == ["vision.layer_00", "vision.layer_01", "vision.layer_02", "connector.output"]
    assert curve.site.tolist()[-1] == "answer"
    assert site_module("llm.layer_11.last_token") == ("llm_last", 11)
    with pytest.raises(ValueError, match="naming"):
        site_module("llm.11")
    odd = pd.concat([_probe_rows(HEALTHY), _probe_rows({"vision": [0.5]}).assign(site="my.features")])
    curve, unplaced = selected_curve(odd, "logistic")
    assert unplaced == ["my.features"] and "my.features" not in set(curve.site)
    assert np.isclose(curve.accuracy.iloc[0], 0.80)



def test_cls_sites_are_placed_but_not_on_the_vision_curve():
    """A CLS tower's ``vision.layer_NN.cls`` sites are known names (not "unplaced"), but the vision curve is the
    patch means, as for every tower."""
    rows = _probe_rows(HEALTHY)
    cls = rows[rows.site.str.startswith("vision.")].assign(site=lambda d: d.site + ".cls", accuracy=0.1)
    curve, unplaced = selected_curve(pd.concat([rows, cls], ignore_index=True), "logistic")
    assert site_module("vision.layer_03.cls") == ("vision_cls", 3) and unplaced == []
    assert list(curve.loc[curve.module == "vision", "site"]) == ["vision.layer_00", "vision.layer_01",
                                                                  "vision.layer_02"]
    assert not curve.site.str.endswith(".cls").any()
