"""Scores of one run (model x dataset): FHS profile, retention, diagnosis and answer calibration.

The zero-shot answer enters as the site ``answer``: its accuracy (the study's P_final) is recomputed from the
feature index's ``answer_pred`` on the test rows, with the same bootstrap interval as the probes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from jaxprobe.scoring.curves import ANSWER_SITE, module_curve, selected_curve
from jaxprobe.scoring.diagnosis import Thresholds, diagnose
from jaxprobe.scoring.fhs import DEFAULT_LAMBDA, module_health, retention
from jaxprobe.stats.calibration import top_label_ece
from jaxprobe.stats.resampling import bootstrap_interval

OVERCONFIDENT = 0.9  # an answer given with at least this probability counts as confident


def answer_row(index: pd.DataFrame, resamples: int, level: float, seed: int) -> dict:
    """The answer as a probe-like row: test accuracy of ``answer_pred`` with a bootstrap interval."""
    test = index[index["split"] == "test"]
    correct = (test["answer_pred"].to_numpy() == test["label"].to_numpy())[None].astype(float)
    low, high = bootstrap_interval(correct, resamples, level, np.random.default_rng(seed))
    return {"site": ANSWER_SITE, "kind": None, "selected": True, "accuracy": float(correct.mean()),
            "ci_low": float(low[0]), "ci_high": float(high[0]), "control_accuracy": np.nan, "perm_p": np.nan}


def answer_calibration(index: pd.DataFrame) -> dict[str, float]:
    """ECE of the answer's top probability, and how often a confident answer is wrong."""
    test = index[index["split"] == "test"]
    probability = test["answer_prob"].to_numpy(float)
    correct = test["answer_pred"].to_numpy() == test["label"].to_numpy()
    ece = float(top_label_ece(probability, correct))
    confident = probability >= OVERCONFIDENT
    wrong_rate = float((confident & ~correct).sum() / max(confident.sum(), 1))
    return {"ece": ece, "confident_wrong_rate": wrong_rate, "confident_answers": int(confident.sum())}


def score_run(probes: pd.DataFrame, index: pd.DataFrame, kind: str, thresholds: Thresholds,
              lam: float = DEFAULT_LAMBDA, resamples: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Everything ``scores.json`` holds for one probe kind."""
    rows = pd.concat([probes, pd.DataFrame([answer_row(index, resamples, level, seed)]).assign(kind=kind)])
    curve = selected_curve(rows, kind)
    health = {module: module_health(module_curve(curve, module), lam)
              for module in ("vision", "connector", "llm_image", "llm_last")}
    final = float(module_curve(curve, ANSWER_SITE)[0])
    ends = {module: h.end for module, h in health.items()}
    return {
        "kind": kind,
        "profile": {"vision": health["vision"].fhs, "connector": health["connector"].fhs,
                    "llm": health["llm_image"].fhs, "final": final},
        "modules": {module: dataclasses.asdict(h) for module, h in health.items()},
        "retention": {"vision_to_connector": retention(ends["vision"], ends["connector"]),
                      "connector_to_llm": retention(ends["connector"], ends["llm_image"]),
                      "llm_to_answer": retention(ends["llm_last"], final)},
        "diagnosis": [dataclasses.asdict(v) for v in diagnose(curve, thresholds)],
        "calibration": answer_calibration(index),
        "curve": curve.to_dict(orient="records"),
    }
