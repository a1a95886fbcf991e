"""The study's four failure modes, each as a verdict with its evidence, from one probe curve.

Thresholds are data (the config's ``diagnosis`` section). A verdict says which sites it rests on, how many
accuracy points the effect is, and whether the 95% bootstrap intervals of the two ends overlap (an effect
inside overlapping intervals is reported but marked as not significant).
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from jaxprobe.scoring.curves import module_curve


@dataclasses.dataclass(frozen=True)
class Thresholds:
    reference_accuracy: float | None = None  # a traditional model on the same split, if the user has one
    vision_min_accuracy: float = 0.75  # used when there is no reference
    vision_margin: float = 0.02
    connector_drop: float = 0.02
    llm_drop: float = 0.03
    answer_gap: float = 0.03


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One failure mode's finding; plain Python types so it serialises to scores.json as is."""

    mode: str
    flagged: bool
    points: float  # size of the effect in accuracy points (signed where a direction matters)
    sites: tuple[str, ...]
    significant: bool | None  # None where there is no interval to compare
    evidence: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "flagged", bool(self.flagged))
        object.__setattr__(self, "points", float(self.points))
        object.__setattr__(self, "sites", tuple(str(site) for site in self.sites))


def _row(curve: pd.DataFrame, module: str, which: int) -> pd.Series:
    return curve[curve["module"] == module].iloc[which]


def _separated(a: pd.Series, b: pd.Series) -> bool | None:
    if pd.isna(a["ci_low"]) or pd.isna(b["ci_low"]):
        return None
    return bool(a["ci_high"] < b["ci_low"] or b["ci_high"] < a["ci_low"])


def visual_quality(curve: pd.DataFrame, t: Thresholds) -> Verdict:
    end = _row(curve, "vision", -1)
    bar = t.reference_accuracy if t.reference_accuracy is not None else t.vision_min_accuracy
    margin = t.vision_margin if t.reference_accuracy is not None else 0.0
    gap = 100 * (end["accuracy"] - bar)
    against = "the reference model" if t.reference_accuracy is not None else "the configured minimum"
    return Verdict("visual representation quality", end["accuracy"] < bar - margin, gap, (end["site"],), None,
                   f"vision tower ends at {end['accuracy']:.3f} vs {bar:.3f} for {against} ({gap:+.1f} points)")


def connector_fidelity(curve: pd.DataFrame, t: Thresholds) -> Verdict:
    before, after = _row(curve, "vision", -1), _row(curve, "connector", 0)
    change = 100 * (after["accuracy"] - before["accuracy"])
    return Verdict("connector projection fidelity", change < -100 * t.connector_drop, change,
                   (before["site"], after["site"]), _separated(before, after),
                   f"{before['site']} {before['accuracy']:.3f} -> {after['site']} {after['accuracy']:.3f} "
                   f"({change:+.1f} points)")


def llm_pattern(values, drop: float) -> str:
    start, end, low, high = values[0], values[-1], values.min(), values.max()
    if high - low < drop:
        return "flat"
    if end < start - drop:
        return "declining"
    if low < start - drop:
        return "drop-then-recover"
    return "rising"


def llm_comprehension(curve: pd.DataFrame, t: Thresholds) -> Verdict:
    values = module_curve(curve, "llm_image")
    entry = _row(curve, "connector", 0)
    llm_rows = curve[curve["module"] == "llm_image"]
    low_row = llm_rows.loc[llm_rows["accuracy"].idxmin()]
    pattern = llm_pattern(values, t.llm_drop)
    loss = 100 * (values.min() - entry["accuracy"])
    flagged = pattern in ("declining", "drop-then-recover") or values[-1] < entry["accuracy"] - t.llm_drop
    return Verdict("LLM comprehension deficit", bool(flagged), loss, (entry["site"], low_row["site"]),
                   _separated(entry, low_row),
                   f"image-token probes are {pattern} across {len(values)} LLM layers; lowest "
                   f"{values.min():.3f} at {low_row['site']} vs {entry['accuracy']:.3f} entering the LLM")


def semantic_mapping(curve: pd.DataFrame, t: Thresholds) -> Verdict:
    last, answer = _row(curve, "llm_last", -1), _row(curve, "answer", 0)
    gap = 100 * (answer["accuracy"] - last["accuracy"])
    direction = "lower" if gap < 0 else "higher"
    return Verdict("semantic-mapping misalignment", abs(gap) > 100 * t.answer_gap, gap,
                   (last["site"], answer["site"]), _separated(last, answer),
                   f"the answer is {abs(gap):.1f} points {direction} than the last-layer probe "
                   f"({answer['accuracy']:.3f} vs {last['accuracy']:.3f})")


def diagnose(curve: pd.DataFrame, thresholds: Thresholds) -> list[Verdict]:
    """All four verdicts; a module missing from the curve is an error naming it."""
    present = set(curve["module"])
    needed = {"vision", "connector", "llm_image", "llm_last", "answer"}
    if not needed <= present:
        raise ValueError(f"the curve lacks modules {sorted(needed - present)}; probe every site first")
    return [check(curve, thresholds) for check in (visual_quality, connector_fidelity, llm_comprehension,
                                                   semantic_mapping)]
