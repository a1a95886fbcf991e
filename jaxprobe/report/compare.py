"""``jaxprobe compare WORKDIR... --out DIR``: several runs (models x datasets) side by side.

Reads each run's scores.json and summary.parquet and writes comparison.parquet (one row per run), an overlay
of the layer-wise curves, the FHS profiles as grouped bars, and a self-contained comparison.html.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from jaxprobe.errors import FeatureError
from jaxprobe.report import html, plots
from jaxprobe.workdir import SCORES_FILE, SUMMARY_FILE


def load_runs(workdirs: list[str | Path]) -> dict[str, tuple[dict, pd.DataFrame]]:
    """name -> (scores, summary) for every work directory; a run without scores says which stage to run."""
    runs = {}
    for workdir in map(Path, workdirs):
        if not (workdir / SCORES_FILE).is_file():
            raise FeatureError(f"{workdir} has no {SCORES_FILE}: run `jaxprobe score {workdir}` (or `jaxprobe run`)")
        name = workdir.name if workdir.name not in runs else f"{workdir.parent.name}/{workdir.name}"
        runs[name] = (json.loads((workdir / SCORES_FILE).read_text()), pd.read_parquet(workdir / SUMMARY_FILE))
    return runs


def compare_runs(workdirs: list[str | Path], out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(workdirs)
    table = pd.concat([summary.assign(run=name) for name, (_, summary) in runs.items()], ignore_index=True)
    table.to_parquet(out / "comparison.parquet", index=False)
    overlay = plots.overlay_figure({name: pd.DataFrame(scores["curve"]) for name, (scores, _) in runs.items()},
                                   "layer-wise accuracy, all runs")
    profiles = plots.profile_figure({name: scores["profile"] for name, (scores, _) in runs.items()},
                                    "Feature Health profiles")
    (out / "overlay.png").write_bytes(overlay)
    (out / "profiles.png").write_bytes(profiles)
    verdicts = "".join(f"<h3>{name}</h3><p>{html.summary_sentence(scores)}</p>" for name, (scores, _) in runs.items())
    body = [table.round(3).to_html(index=False), html.image(overlay, "overlay"), html.image(profiles, "profiles"),
            verdicts]
    (out / "comparison.html").write_text(html.render("jaxprobe comparison", body))
    return out / "comparison.html"
