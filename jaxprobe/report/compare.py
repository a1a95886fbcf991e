"""``jaxprobe compare WORKDIR... --out DIR``: several runs (models x datasets) side by side.

Reads each run's scores.json and summary.parquet and writes comparison.parquet (one row per run), an overlay
of the layer-wise curves, the FHS profiles as grouped bars, and a self-contained comparison.html. Runs over
different class sets (different datasets, or the same dataset with other classes) can be compared, since the
study compares models across datasets, but their accuracies have different chance levels: the command warns,
and the page says so above the table.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from jaxprobe.errors import FeatureError
from jaxprobe.report import html, plots
from jaxprobe.workdir import SCORES_FILE, SUMMARY_FILE

SCORES_KEYS = ("class_names", "curve", "profile", "modules", "diagnosis")  # what the comparison reads


def load_runs(workdirs: list[str | Path]) -> dict[str, tuple[dict, pd.DataFrame]]:
    """name -> (scores, summary) for every work directory; a run without scores says which stage to run."""
    runs = {}
    for workdir in map(Path, workdirs):
        if not (workdir / SCORES_FILE).is_file() or not (workdir / SUMMARY_FILE).is_file():
            raise FeatureError(f"{workdir} has no {SCORES_FILE} and {SUMMARY_FILE}: run `jaxprobe score {workdir}` "
                               "(or `jaxprobe run`)")
        name = workdir.name if workdir.name not in runs else f"{workdir.parent.name}/{workdir.name}"
        try:
            scores = json.loads((workdir / SCORES_FILE).read_text())
            summary = pd.read_parquet(workdir / SUMMARY_FILE)
        except Exception as error:  # a damaged file, whatever the reader raised
            raise FeatureError(f"{workdir}'s {SCORES_FILE} or {SUMMARY_FILE} is unreadable ({type(error).__name__}: "
                               f"{error}); rerun `jaxprobe score {workdir}`") from error
        missing = [key for key in SCORES_KEYS if not isinstance(scores, dict) or key not in scores]
        if missing:
            raise FeatureError(f"{workdir / SCORES_FILE} lacks {missing} (written by an older jaxprobe?); rerun "
                               f"`jaxprobe score {workdir}`")
        runs[name] = (scores, summary)
    return runs


def class_set_warning(runs: dict[str, tuple[dict, pd.DataFrame]]) -> str | None:
    """A sentence naming the runs' class sets when they are not all the same, else None."""
    sets = {name: tuple(sorted(scores["class_names"])) for name, (scores, _) in runs.items()}
    if len(set(sets.values())) <= 1:
        return None
    listed = "; ".join(f"{name}: {', '.join(classes)}" for name, classes in sets.items())
    return (f"these runs classify different class sets ({listed}): their accuracies have different chance levels "
            "and are not directly comparable")


def compare_runs(workdirs: list[str | Path], out: str | Path, log=print) -> Path:
    out = Path(out)
    runs = load_runs(workdirs)
    warning = class_set_warning(runs)
    if warning:
        log(f"warning: {warning}")
    out.mkdir(parents=True, exist_ok=True)
    table = pd.concat([summary.assign(run=name) for name, (_, summary) in runs.items()], ignore_index=True)
    table.to_parquet(out / "comparison.parquet", index=False)
    overlay = plots.overlay_figure({name: plots.curve_frame(scores["curve"]) for name, (scores, _) in runs.items()},
                                   "layer-wise accuracy, all runs")
    profiles = plots.profile_figure({name: scores["profile"] for name, (scores, _) in runs.items()},
                                    "Feature Health profiles")
    (out / "overlay.png").write_bytes(overlay)
    (out / "profiles.png").write_bytes(profiles)
    verdicts = "".join(f"<h3>{name}</h3><p>{html.summary_sentence(scores)}</p>" for name, (scores, _) in runs.items())
    body = [f'<p class="warn">Warning: {html.esc(warning)}.</p>' if warning else "",
            table.round(3).to_html(index=False), html.image(overlay, "overlay"), html.image(profiles, "profiles"),
            verdicts]
    (out / "comparison.html").write_text(html.render("jaxprobe comparison", body))
    return out / "comparison.html"
