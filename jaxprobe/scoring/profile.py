"""Scores of one run (model x dataset): FHS profile, retention, diagnosis and the zero-shot answer.

The model's own answer enters the curve as sites: ``answer`` (the option-letter scores, ``answer_pred``) and, when
the reply was generated, ``answer.generated`` (``generated_pred``; an unparseable reply counts as wrong). Their
test accuracies get the same bootstrap interval as the probes. P_final, as the study measured it, is the generated
answer's accuracy when there is one, else the option scores'. Answer variants (permuted options, paraphrases)
give the reliability section: accuracy per variant and how often the answers agree. Modules the
run did not probe (partial ``capture.sites``) get ``None`` in the profile and retention and are listed in
``missing_modules``; the verdicts that need them are inconclusive.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from jaxprobe.scoring.curves import ANSWER_SITE, GENERATED_SITE, check_kind, missing_modules, selected_curve
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


ANSWER_COLUMNS = {ANSWER_SITE: "answer_pred", GENERATED_SITE: "generated_pred"}


def answer_row(index: pd.DataFrame, resamples: int, level: float, seed: int, site: str = ANSWER_SITE) -> dict:
    """An answer as a probe-like row: test accuracy of its predictions with a bootstrap interval."""
    test = _test_rows(index)
    correct = (test[ANSWER_COLUMNS[site]].to_numpy() == test["label"].to_numpy())[None].astype(float)
    low, high = bootstrap_interval(correct, resamples, level, np.random.default_rng(seed))
    return {"site": site, "kind": None, "selected": True, "accuracy": float(correct.mean()),
            "ci_low": float(low[0]), "ci_high": float(high[0]), "control_accuracy": np.nan, "perm_p": np.nan}


def generated_summary(index: pd.DataFrame, class_names: Sequence[str]) -> dict:
    """The parsed replies: accuracy, how many could not be parsed and why, and their confusion matrix (last
    column: unparseable)."""
    test, num_classes = _test_rows(index), len(class_names)
    labels, predictions = test["label"].to_numpy(int), test["generated_pred"].to_numpy(int)
    parsed = predictions >= 0
    matrix = np.zeros((num_classes, num_classes + 1), int)
    np.add.at(matrix, (labels, np.where(parsed, predictions, num_classes)), 1)
    how = test["generated_how"].value_counts().to_dict() if "generated_how" in test else {}
    return {"accuracy": float((predictions == labels).mean()) if len(test) else None,
            "unparseable": int((~parsed).sum()), "unparseable_rate": float((~parsed).mean()) if len(test) else None,
            "how": {str(k): int(v) for k, v in how.items()}, "confusion": matrix.tolist(),
            "examples": [str(text)[:200] for text in test.loc[~parsed, "generated_text"].head(3)]
            if "generated_text" in test else []}


def reliability(index: pd.DataFrame) -> dict | None:
    """Accuracy of each answer variant (the main question, permuted options, paraphrases) on the test rows, the
    share of test images where every variant gives the same class, and the mean pairwise agreement."""
    columns = {"main": "answer_pred", **{c.removeprefix("variant_").removesuffix("_pred"): c for c in index.columns
                                         if c.startswith("variant_") and c.endswith("_pred")}}
    if len(columns) < 2:
        return None
    test = _test_rows(index)
    answers = np.stack([test[c].to_numpy(int) for c in columns.values()])  # [V, M]
    pairs = [(a, b) for a in range(len(answers)) for b in range(a + 1, len(answers))]
    return {"variants": {name: float((test[c].to_numpy(int) == test["label"].to_numpy()).mean())
                         for name, c in columns.items()},
            "all_agree": float((answers == answers[:1]).all(0).mean()) if len(test) else None,
            "pairwise_agreement": float(np.mean([(answers[a] == answers[b]).mean() for a, b in pairs]))}


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
    answers = [site for site, column in ANSWER_COLUMNS.items() if column in index]
    has_answer, generated = ANSWER_SITE in answers, GENERATED_SITE in answers
    rows = probes
    if answers:
        answer_rows = [answer_row(index, settings.resamples, settings.level, settings.seed, site) for site in answers]
        rows = pd.concat([probes, pd.DataFrame(answer_rows).assign(kind=settings.kind)], ignore_index=True)
    curve, unplaced = selected_curve(rows, settings.kind)
    test = test_set(index, settings)
    health = {module: (module_health(curve.loc[curve["module"] == module, "accuracy"].to_numpy(),
                                     settings.fhs_lambda)
                       if (curve["module"] == module).any() else None) for module in HEALTH_MODULES}
    final_site = GENERATED_SITE if generated else ANSWER_SITE if has_answer else None
    final = float(curve.loc[curve["site"] == final_site, "accuracy"].iloc[0]) if final_site else None
    ends = {module: (h.end if h is not None else None) for module, h in health.items()}
    source, _ = Context(curve, settings.thresholds, test, layout).vision_source()
    ends["vision"] = float(source["accuracy"]) if source is not None else None  # what the connector receives
    return {
        "kind": settings.kind,
        "class_names": list(class_names),
        "test": {"size": test.size, "chance": test.chance, "level": test.level},
        "split_counts": split_counts(index, class_names),
        "profile": _profile(health, final),
        "final_source": {GENERATED_SITE: "generated reply", ANSWER_SITE: "option scores", None: None}[final_site],
        "modules": {module: dataclasses.asdict(h) for module, h in health.items() if h is not None},
        "missing_modules": missing_modules(curve),
        "unplaced_sites": unplaced,
        "site_layout": dict(layout) if layout is not None else None,
        "retention": _retention(ends, final),
        "diagnosis": [dataclasses.asdict(v) for v in diagnose(curve, settings.thresholds, test, layout)],
        "calibration": answer_calibration(index) if has_answer else None,
        "answer": answer_summary(index, class_names) if has_answer else None,
        "generated": generated_summary(index, class_names) if generated else None,
        "reliability": reliability(index) if has_answer else None,
        "curve": curve.to_dict(orient="records"),
    }
