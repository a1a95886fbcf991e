"""Scores of one run (model x dataset): FHS profile, retention, diagnosis and the zero-shot answer.

The zero-shot answer enters as the site ``answer``: its accuracy (the study's P_final) is recomputed from the
feature index's ``answer_pred`` on the test rows, with the same bootstrap interval as the probes. Modules the
run did not probe (partial ``capture.sites``) get ``None`` in the profile and retention and are listed in
``missing_modules``; the verdicts that need them are inconclusive.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from jaxprobe.scoring.curves import ANSWER_SITE, check_kind, missing_modules, module_curve, selected_curve
from jaxprobe.scoring.diagnosis import Context, EvalSet, Thresholds, diagnose
from jaxprobe.scoring.fhs import DEFAULT_LAMBDA, module_health, retention
from jaxprobe.stats.calibration import top_label_ece
from jaxprobe.stats.metrics import auroc_ovr, confusion, per_class_recall
from jaxprobe.stats.resampling import bootstrap_interval

OVERCONFIDENT = 0.9  # an answer given with at least this probability counts as confident
HEALTH_MODULES = ("vision", "connector", "llm_image", "llm_last")


@dataclasses.dataclass(frozen=True)
class ScoreSettings:
    """What scoring needs from the config: the probe kind, FHS lambda, thresholds and the probes' CI settings."""

    kind: str = "logistic"
    thresholds: Thresholds = dataclasses.field(default_factory=Thresholds)
    fhs_lambda: float = DEFAULT_LAMBDA
    resamples: int = 1000
    level: float = 0.95
    seed: int = 0
    permutations: int = 0  # size of the probes' permutation null, so verdicts know whether p can reach alpha


def _test_rows(index: pd.DataFrame) -> pd.DataFrame:
    return index[index["split"] == "test"]


def test_set(index: pd.DataFrame, settings: ScoreSettings) -> EvalSet:
    """Test size and chance (majority-class rate) of the index's test split."""
    labels = _test_rows(index)["label"].to_numpy()
    chance = float(np.bincount(labels).max() / len(labels)) if len(labels) else float("nan")
    return EvalSet(len(labels), chance, settings.level, settings.permutations)


def split_counts(index: pd.DataFrame, class_names: Sequence[str]) -> dict[str, dict[str, int]]:
    """Images per split and class, as the probes saw them."""
    counts = {}
    for split, rows in index.groupby("split", sort=False):
        per_class = rows["label"].value_counts().reindex(range(len(class_names)), fill_value=0)
        counts[str(split)] = dict(zip(class_names, map(int, per_class), strict=True))
    return counts


def answer_row(index: pd.DataFrame, resamples: int, level: float, seed: int) -> dict:
    """The answer as a probe-like row: test accuracy of ``answer_pred`` with a bootstrap interval."""
    test = _test_rows(index)
    correct = (test["answer_pred"].to_numpy() == test["label"].to_numpy())[None].astype(float)
    low, high = bootstrap_interval(correct, resamples, level, np.random.default_rng(seed))
    return {"site": ANSWER_SITE, "kind": None, "selected": True, "accuracy": float(correct.mean()),
            "ci_low": float(low[0]), "ci_high": float(high[0]), "control_accuracy": np.nan, "perm_p": np.nan}


def answer_calibration(index: pd.DataFrame) -> dict[str, float]:
    """ECE of the answer's top probability, and how often a confident answer is wrong."""
    test = _test_rows(index)
    probability = test["answer_prob"].to_numpy(float)
    correct = test["answer_pred"].to_numpy() == test["label"].to_numpy()
    ece = float(top_label_ece(probability, correct))
    confident = probability >= OVERCONFIDENT
    wrong_rate = float((confident & ~correct).sum() / max(confident.sum(), 1))
    return {"ece": ece, "confident_wrong_rate": wrong_rate, "confident_answers": int(confident.sum())}


def answer_summary(index: pd.DataFrame, class_names: Sequence[str]) -> dict:
    """Confusion matrix (rows: true class, columns: answered class), per-class recall and AUROC of the answer.

    A model that answers one letter for every image shows as a single filled column and recall 1 for one class.
    """
    test, num_classes = _test_rows(index), len(class_names)
    labels, answers = test["label"].to_numpy(int), test["answer_pred"].to_numpy(int)
    matrix = confusion(answers, labels, num_classes)
    recall = per_class_recall(matrix)
    score_columns = [f"answer_score_{k}" for k in range(num_classes)]
    auroc = (float(auroc_ovr(test[score_columns].to_numpy(float), labels, num_classes))
             if all(c in test for c in score_columns) and len(test) else None)
    return {"confusion": matrix.astype(int).tolist(), "recall": dict(zip(class_names, recall.tolist(), strict=True)),
            "auroc": auroc, "answered": dict(zip(class_names, matrix.sum(0).astype(int).tolist(), strict=True))}


def _profile(health: Mapping, final: float | None) -> dict[str, float | None]:
    fhs = {module: (h.fhs if h is not None else None) for module, h in health.items()}
    return {"vision": fhs["vision"], "connector": fhs["connector"], "llm": fhs["llm_image"], "final": final}


def _retention(ends: Mapping[str, float | None], final: float | None) -> dict[str, float | None]:
    def kept(before, after):
        return retention(before, after) if before is not None and after is not None else None

    return {"vision_to_connector": kept(ends["vision"], ends["connector"]),
            "connector_to_llm": kept(ends["connector"], ends["llm_image"]),
            "llm_to_answer": kept(ends["llm_last"], final)}


def score_run(probes: pd.DataFrame, index: pd.DataFrame, settings: ScoreSettings, class_names: Sequence[str],
              layout: Mapping | None = None) -> dict:
    """Everything ``scores.json`` holds for one probe kind (``layout``: the feature store's site_layout)."""
    check_kind(probes, settings.kind)
    has_answer = "answer_pred" in index
    rows = probes
    if has_answer:
        answer = answer_row(index, settings.resamples, settings.level, settings.seed)
        rows = pd.concat([probes, pd.DataFrame([answer]).assign(kind=settings.kind)], ignore_index=True)
    curve, unplaced = selected_curve(rows, settings.kind)
    test = test_set(index, settings)
    health = {module: (module_health(module_curve(curve, module), settings.fhs_lambda)
                       if (curve["module"] == module).any() else None) for module in HEALTH_MODULES}
    final = float(module_curve(curve, ANSWER_SITE)[0]) if has_answer else None
    ends = {module: (h.end if h is not None else None) for module, h in health.items()}
    source, _ = Context(curve, settings.thresholds, test, layout).vision_source()
    ends["vision"] = float(source["accuracy"]) if source is not None else None  # what the connector receives
    return {
        "kind": settings.kind,
        "class_names": list(class_names),
        "test": {"size": test.size, "chance": test.chance, "level": test.level},
        "split_counts": split_counts(index, class_names),
        "profile": _profile(health, final),
        "modules": {module: dataclasses.asdict(h) for module, h in health.items() if h is not None},
        "missing_modules": missing_modules(curve),
        "unplaced_sites": unplaced,
        "site_layout": dict(layout) if layout is not None else None,
        "retention": _retention(ends, final),
        "diagnosis": [dataclasses.asdict(v) for v in diagnose(curve, settings.thresholds, test, layout)],
        "calibration": answer_calibration(index) if has_answer else None,
        "answer": answer_summary(index, class_names) if has_answer else None,
        "curve": curve.to_dict(orient="records"),
    }
