"""The study's four failure modes, each as a verdict with its evidence, from one probe curve.

A verdict's ``status`` is one of three, always with a one-sentence ``reason``:

- ``flagged``: the effect crosses its threshold *and* is significant;
- ``not flagged``: the effect stays on the healthy side of its threshold;
- ``inconclusive``: the effect crosses the threshold but the data cannot tell it from noise, the test set is
  smaller than ``min_test_images``, or a site the check needs was not probed.

How significance is judged:

- every accuracy carries an interval at the probes' CI level: the probes' bootstrap interval widened to at least
  the Wilson score interval, because a bootstrap over 4 test images that are all right is [1, 1] and would
  "separate" from almost anything;
- a change between two sites is significant when their intervals separate; a vision tower below its bar is
  significant when its whole interval is below the bar;
- a loss of signal is judged only where there was signal to lose: the site it is lost from must beat chance by
  its permutation test (p <= ``alpha``), or by its interval when no permutation null can reach ``alpha``.

Chance is the majority-class rate of the test split (the accuracy of always answering the commonest class).
Without a reference model, the vision bar is relative to chance: ``chance + vision_min_skill * (1 - chance)``,
e.g. 0.75 on two balanced classes and 0.67 on three; with one (``reference_accuracy``), it is the reference less
``vision_margin``. Which vision site feeds the connector comes from the feature store's ``site_layout`` (a
LLaVA-style model feeds its second-to-last layer); without one the last vision site is assumed and the evidence
says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pandas as pd

from jaxprobe.stats.intervals import widened_interval

FLAGGED, NOT_FLAGGED, INCONCLUSIVE = "flagged", "not flagged", "inconclusive"
STATUSES = (FLAGGED, NOT_FLAGGED, INCONCLUSIVE)


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """The config's ``diagnosis`` section (defaults mirror ``configs/demo.py``)."""

    reference_accuracy: float | None = None  # a traditional model on the same split, if the user has one
    vision_min_skill: float = 0.5  # without a reference: share of the way from chance to perfect accuracy
    vision_margin: float = 0.02  # with a reference: how far below it still counts as on par
    connector_drop: float = 0.02
    llm_drop: float = 0.03
    answer_gap: float = 0.03
    min_test_images: int = 30
    alpha: float = 0.05


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """What the verdicts need to know about the test split the accuracies were measured on (the evaluation set)."""

    size: int
    chance: float  # majority-class rate
    level: float = 0.95  # the intervals' confidence level
    permutations: int = 0  # size of the probes' permutation null (0: none)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One failure mode's finding; plain Python types so it serialises to scores.json as is."""

    mode: str
    status: str  # flagged | not flagged | inconclusive
    points: float | None  # size of the effect in accuracy points (signed where a direction matters)
    sites: tuple[str, ...]
    significant: bool | None  # None where nothing was compared
    evidence: str  # the numbers the status rests on
    reason: str  # why this status, in one sentence
    flagged: bool = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"verdict status must be one of {STATUSES}, got {self.status!r}")
        object.__setattr__(self, "flagged", self.status == FLAGGED)
        object.__setattr__(self, "points", None if self.points is None else float(self.points))
        object.__setattr__(self, "sites", tuple(str(site) for site in self.sites))
        if self.significant is not None:
            object.__setattr__(self, "significant", bool(self.significant))


@dataclasses.dataclass(frozen=True)
class Point:
    """One site's test accuracy with its (widened) interval and permutation p-value."""

    site: str
    accuracy: float
    low: float
    high: float
    perm_p: float

    def text(self) -> str:
        return f"{self.site} {self.accuracy:.3f} [{self.low:.3f}, {self.high:.3f}]"


def point(row: pd.Series, test: EvalSet) -> Point:
    low, high = widened_interval(float(row["accuracy"]), float(row["ci_low"]), float(row["ci_high"]), test.size,
                                 test.level)
    return Point(str(row["site"]), float(row["accuracy"]), low, high, float(row["perm_p"]))


def separated(a: Point, b: Point) -> bool:
    return a.high < b.low or b.high < a.low


def beats_chance(p: Point, test: EvalSet, alpha: float) -> tuple[bool, str]:
    """Whether a site carries class signal, and the test that says so."""
    if test.permutations > 0 and 1 / (1 + test.permutations) <= alpha and not np.isnan(p.perm_p):
        return p.perm_p <= alpha, f"permutation p = {p.perm_p:.3g} vs alpha {alpha:g}"
    return p.low > test.chance, f"interval low {p.low:.3f} vs chance {test.chance:.3f}"


@dataclasses.dataclass(frozen=True)
class Context:
    curve: pd.DataFrame
    thresholds: Thresholds
    test: EvalSet
    layout: Mapping | None  # the feature store's site_layout, or None

    def rows(self, module: str) -> pd.DataFrame:
        return self.curve[self.curve["module"] == module]

    def vision_source(self) -> tuple[pd.Series | None, str]:
        """The vision site whose output feeds the connector, and a note when it had to be assumed."""
        vision = self.rows("vision")
        source = (self.layout or {}).get("connector_source")
        if source is not None:
            match = vision[vision["site"] == source]
            note = "" if len(match) else f"the connector's input {source} was not probed"
            return (match.iloc[0] if len(match) else None), note
        if vision.empty:
            return None, "no vision site was probed"
        last = vision.iloc[-1]
        return last, (f"the feature store has no site_layout: assuming the last vision site ({last['site']}) "
                      "feeds the connector")


def _missing(mode: str, needs: str) -> Verdict:
    return Verdict(mode, INCONCLUSIVE, None, (), None, "not measured",
                   f"needs {needs}, which this run did not probe (capture.sites)")


def _judge(crosses: bool, significant: bool, healthy: str, significant_text: str, noise_text: str) -> tuple[str, str]:
    """Status and reason from whether the effect crosses its threshold and whether that is significant."""
    if not crosses:
        return NOT_FLAGGED, healthy
    return (FLAGGED, significant_text) if significant else (INCONCLUSIVE, noise_text)


def visual_quality(ctx: Context) -> Verdict:
    mode = "visual representation quality"
    row, note = ctx.vision_source()
    if row is None:
        return _missing(mode, "the vision site that feeds the connector")
    t, end = ctx.thresholds, point(row, ctx.test)
    if t.reference_accuracy is not None:
        bar, what = t.reference_accuracy - t.vision_margin, f"the reference {t.reference_accuracy:.3f} less the margin"
    else:
        bar = ctx.test.chance + t.vision_min_skill * (1 - ctx.test.chance)
        what = f"chance {ctx.test.chance:.3f} + {t.vision_min_skill:g} of the way to 1"
    gap = 100 * (end.accuracy - bar)
    below = end.high < bar
    status, reason = _judge(end.accuracy < bar, below, "the vision tower reaches its bar",
                            "its whole interval lies below the bar", "it is below the bar, but its interval reaches it")
    evidence = f"{end.text()} vs a bar of {bar:.3f} ({what}): {gap:+.1f} points" + (f"; {note}" if note else "")
    return Verdict(mode, status, gap, (end.site,), below, evidence, reason)


def connector_fidelity(ctx: Context) -> Verdict:
    mode = "connector projection fidelity"
    row, note = ctx.vision_source()
    after_rows = ctx.rows("connector")
    if row is None or after_rows.empty:
        return _missing(mode, "the connector output and the vision site that feeds it")
    before, after = point(row, ctx.test), point(after_rows.iloc[0], ctx.test)
    change = 100 * (after.accuracy - before.accuracy)
    apart = separated(before, after)
    signal, test_text = beats_chance(before, ctx.test, ctx.thresholds.alpha)
    status, reason = _judge(-change > 100 * ctx.thresholds.connector_drop, apart and signal,
                            f"the connector loses at most {100 * ctx.thresholds.connector_drop:g} points",
                            "the drop is beyond the threshold and the intervals separate",
                            "the drop is beyond the threshold, but " + (
                                "the intervals overlap" if signal else f"its input is not above chance ({test_text})"))
    evidence = f"{before.text()} -> {after.text()}: {change:+.1f} points; input signal: {test_text}" + (
        f"; {note}" if note else "")
    return Verdict(mode, status, change, (before.site, after.site), apart, evidence, reason)


def llm_pattern(values: np.ndarray, drop: float) -> str:
    """Shape of the image-token curve from the LLM's input (``values[0]``) through its layers."""
    start, end, low, high = values[0], values[-1], values.min(), values.max()
    if high - low < drop:
        return "flat"
    if end < start - drop:
        return "declining"
    if low < start - drop:
        return "drop-then-recover"
    return "rising"


def llm_comprehension(ctx: Context) -> Verdict:
    mode = "LLM comprehension deficit"
    entry_rows = pd.concat([ctx.rows("connector").iloc[:1], ctx.rows("llm_image")])
    if len(entry_rows) < 2 or ctx.rows("llm_image").empty:
        return _missing(mode, "image-token probes of the LLM's input and of two or more points through it")
    entry, layers = point(entry_rows.iloc[0], ctx.test), entry_rows.iloc[1:]
    low = point(layers.loc[layers["accuracy"].idxmin()], ctx.test)
    drop = ctx.thresholds.llm_drop
    pattern = llm_pattern(entry_rows["accuracy"].to_numpy(float), drop)
    loss = 100 * (low.accuracy - entry.accuracy)
    apart = separated(entry, low)
    signal, test_text = beats_chance(entry, ctx.test, ctx.thresholds.alpha)
    status, reason = _judge(-loss > 100 * drop, apart and signal,
                            f"no LLM layer falls more than {100 * drop:g} points below the LLM's input",
                            "the loss is beyond the threshold and the intervals separate",
                            "the loss is beyond the threshold, but " + (
                                "the intervals overlap" if signal else f"the input is not above chance ({test_text})"))
    evidence = (f"image-token probes are {pattern} across {len(layers)} LLM points; lowest {low.text()} vs "
                f"{entry.text()} entering the LLM: {loss:+.1f} points; input signal: {test_text}")
    return Verdict(mode, status, loss, (entry.site, low.site), apart, evidence, reason)


def _semantic_mapping(ctx: Context, mode: str, answer_rows: pd.DataFrame) -> Verdict:
    last_rows = ctx.rows("llm_last")
    if last_rows.empty or answer_rows.empty:
        return _missing(mode, "the last LLM layer's last-token probe and the zero-shot answer")
    last, answer = point(last_rows.iloc[-1], ctx.test), point(answer_rows.iloc[-1], ctx.test)
    gap = 100 * (answer.accuracy - last.accuracy)
    apart = separated(last, answer)
    status, reason = _judge(abs(gap) > 100 * ctx.thresholds.answer_gap, apart,
                            f"the answer is within {100 * ctx.thresholds.answer_gap:g} points of the last-layer probe",
                            "the gap is beyond the threshold and the intervals separate",
                            "the gap is beyond the threshold, but the intervals overlap")
    direction = "lower" if gap < 0 else "higher"
    evidence = f"{answer.text()} is {abs(gap):.1f} points {direction} than the probe {last.text()}"
    return Verdict(mode, status, gap, (last.site, answer.site), apart, evidence, reason)


def semantic_mapping(ctx: Context) -> Verdict:
    """Against the study's P_final: the generated reply when there is one (the last answer site), else the option
    scores."""
    return _semantic_mapping(ctx, "semantic-mapping misalignment", ctx.rows("answer"))


def option_score_mapping(ctx: Context) -> Verdict | None:
    """The same check against the option-letter scores, beside the generated one (None without generation)."""
    answers = ctx.rows("answer")
    if len(answers) < 2:
        return None
    return _semantic_mapping(ctx, OPTION_SCORE_MODE, answers.iloc[:1])


def _too_small(verdict: Verdict, test: EvalSet, minimum: int) -> Verdict:
    """Every verdict from a test set below ``minimum`` images is inconclusive, whatever its numbers say."""
    if test.size >= minimum:
        return verdict
    reason = (f"only {test.size} test images (diagnosis.min_test_images = {minimum}): too few to tell an effect "
              "from noise")
    if verdict.status == INCONCLUSIVE:
        reason += f"; besides, {verdict.reason}"
    return dataclasses.replace(verdict, status=INCONCLUSIVE, reason=reason)


OPTION_SCORE_MODE = "option-score semantic mapping"
CHECKS = (visual_quality, connector_fidelity, llm_comprehension, semantic_mapping, option_score_mapping)
EXPLANATIONS = {  # one sentence each, for the report
    "visual representation quality": "Does the vision tower's output, the part the LLM receives, separate the "
                                     "classes well (against a reference model, or well above chance)?",
    "connector projection fidelity": "Does the connector lose class information between the vision tower and "
                                     "the LLM?",
    "LLM comprehension deficit": "Do the image tokens lose class information as they pass through the LLM's "
                                 "layers?",
    "semantic-mapping misalignment": "Does the model's own answer (its generated reply when there is one, as the "
                                     "study measured it) differ from what its last layer knows (the last-token "
                                     "probe)?",
    OPTION_SCORE_MODE: "The same question for the answer read from the option letters' scores instead of the "
                       "generated reply.",
}
STATUS_EXPLANATIONS = {
    FLAGGED: "the effect crosses its threshold and is significant",
    NOT_FLAGGED: "the effect stays on the healthy side of its threshold",
    INCONCLUSIVE: "the data cannot tell (too few test images, overlapping intervals, or a site not probed)",
}


def diagnose(curve: pd.DataFrame, thresholds: Thresholds, test: EvalSet,
             layout: Mapping | None = None) -> list[Verdict]:
    """The four failure modes (and, with a generated answer, the option-score version of the last); a module
    missing from the curve makes the checks that need it inconclusive."""
    ctx = Context(curve.reset_index(drop=True), thresholds, test, layout)
    verdicts = [check(ctx) for check in CHECKS]
    return [_too_small(verdict, test, thresholds.min_test_images) for verdict in verdicts if verdict is not None]
