"""Matplotlib figures of a run: the layer-wise curve and the FHS profile (PNG bytes, headless).

Legends sit outside the axes (right of the plot), so they never cover a curve, an interval or a bar.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

MODULE_COLOURS = {"vision": "#1f77b4", "connector": "#9467bd", "llm_image": "#2ca02c", "llm_last": "#ff7f0e",
                  "answer": "#d62728"}
MODULE_LABELS = {"vision": "vision tower", "connector": "connector", "llm_image": "LLM (image-token mean)",
                 "llm_last": "LLM (last prompt token)", "answer": "zero-shot answer"}
FIGURE_DPI = 110
X_GROUPS = (("vision",), ("connector",), ("llm_image", "llm_last"), ("answer",))  # LLM poolings share their x


def _outside_legend(axis) -> None:
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def curve_frame(records: list[dict]) -> pd.DataFrame:
    """scores.json's curve as a frame with float columns (strict JSON stores a missing value as null)."""
    frame = pd.DataFrame(records)
    numeric = [column for column in frame.columns if column not in ("site", "module")]
    frame[numeric] = frame[numeric].astype(float)
    return frame


def curve_positions(curve: pd.DataFrame) -> pd.Series:
    """x position of each site: vision layers, connector, LLM layers (both poolings share x), answer; the sites
    of a group are placed by the rank of their layer, so a partial selection leaves no gaps or overlaps."""
    x = pd.Series(0.0, index=curve.index)
    position = 0
    for modules in X_GROUPS:
        rows = curve[curve["module"].isin(modules)]
        layers = sorted(rows["layer"].unique())
        x[rows.index] = position + rows["layer"].map({layer: k for k, layer in enumerate(layers)}).astype(float)
        position += len(layers)
    return x


def curve_figure(curve: pd.DataFrame, title: str, chance: float) -> bytes:
    """Accuracy through the model with 95% CI bands, module boundaries, chance and the control task."""
    x = curve_positions(curve)
    figure, axis = plt.subplots(figsize=(9, 4))
    for module, rows in curve.groupby("module", sort=False):
        px = x[rows.index]
        colour = MODULE_COLOURS[module]
        axis.plot(px, rows["accuracy"], "o-", ms=3, color=colour, label=MODULE_LABELS[module])
        if len(rows) > 1:
            axis.fill_between(px, rows["ci_low"], rows["ci_high"], color=colour, alpha=0.15)
        else:  # a one-site module (connector, answer): an error bar instead of a band
            axis.errorbar(px, rows["accuracy"], yerr=[rows["accuracy"] - rows["ci_low"],
                                                      rows["ci_high"] - rows["accuracy"]], color=colour, capsize=3)
        if rows["control_accuracy"].notna().any():
            axis.plot(px, rows["control_accuracy"], ":", color=MODULE_COLOURS[module], alpha=0.6)
    for modules in X_GROUPS[1:]:
        starts = x[curve["module"].isin(modules)]
        if len(starts):
            axis.axvline(starts.min() - 0.5, color="grey", lw=0.6, ls="--")
    axis.axhline(chance, color="black", lw=0.8, ls="--", label="chance (majority class)")
    axis.set(xlabel="site (vision layers | connector | LLM layers | answer)", ylabel="test accuracy",
             title=title + "  (dotted: control task)", ylim=(0, 1.02))
    _outside_legend(axis)
    return _png(figure)


def profile_figure(profiles: dict[str, dict[str, float]], title: str) -> bytes:
    """FHS_V -> FHS_C -> FHS_L -> P_final bars, one group per run (model x dataset)."""
    stages = ["vision", "connector", "llm", "final"]
    figure, axis = plt.subplots(figsize=(max(5, 1.8 * len(profiles)), 3.5))
    width = 0.8 / len(stages)
    for k, stage in enumerate(stages):
        values = [np.nan if profile.get(stage) is None else profile[stage] for profile in profiles.values()]
        axis.bar(np.arange(len(profiles)) + k * width, values, width, label="P_final" if stage == "final"
                 else f"FHS {stage}")
    axis.set_xticks(np.arange(len(profiles)) + 1.5 * width, list(profiles), rotation=15, fontsize=8)
    axis.set(ylabel="score", title=title)
    _outside_legend(axis)
    return _png(figure)


def overlay_figure(curves: dict[str, pd.DataFrame], title: str) -> bytes:
    """Image-token curves of several runs on one normalised depth axis (0 = first vision layer, 1 = answer)."""
    figure, axis = plt.subplots(figsize=(9, 4))
    for name, curve in curves.items():
        main = curve[curve["module"] != "llm_last"].reset_index(drop=True)
        depth = np.linspace(0, 1, len(main))
        axis.plot(depth, main["accuracy"], "-", lw=1.2, label=name)
    axis.set(xlabel="relative depth (vision -> connector -> LLM -> answer)", ylabel="test accuracy", title=title,
             ylim=(0, 1.02))
    _outside_legend(axis)
    return _png(figure)
