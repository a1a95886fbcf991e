"""Write a run's report files from its scores.json: summary.parquet, curve.png, profile.png, report.html."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from jaxprobe.report import html, plots
from jaxprobe.workdir import REPORT_FILE, SCORES_FILE, SUMMARY_FILE


def summary_table(name: str, scores: dict) -> pd.DataFrame:
    """One row per run: profile, module ends, retention and which failure modes are flagged."""
    row = {"run": name, "kind": scores["kind"], **{f"fhs_{k}" if k != "final" else "p_final": v
                                                  for k, v in scores["profile"].items()}}
    row.update({f"retention_{k}": v for k, v in scores["retention"].items()})
    row.update({f"flag_{v['mode'].split()[0].lower()}": v["flagged"] for v in scores["diagnosis"]})
    row.update({f"answer_{k}": v for k, v in scores["calibration"].items()})
    return pd.DataFrame([row])


def report_workdir(workdir: str | Path, name: str | None = None) -> Path:
    """The report of a scored work directory (its scores.json); returns the path of report.html."""
    workdir = Path(workdir)
    scores = json.loads((workdir / SCORES_FILE).read_text())
    return write_report(workdir, name or workdir.name, scores, len(scores["class_names"]))


def write_report(workdir: str | Path, name: str, scores: dict, num_classes: int) -> Path:
    """All report files of one run into ``workdir``; returns the path of report.html."""
    workdir = Path(workdir)
    summary_table(name, scores).to_parquet(workdir / SUMMARY_FILE, index=False)
    curve = pd.DataFrame(scores["curve"])
    curve_png = plots.curve_figure(curve, f"{name} ({scores['kind']} probes)", chance=1 / num_classes)
    profile_png = plots.profile_figure({name: scores["profile"]}, "Feature Health profile")
    (workdir / "curve.png").write_bytes(curve_png)
    (workdir / "profile.png").write_bytes(profile_png)
    page = html.render(f"jaxprobe report: {name}", [html.run_section(name, scores, curve_png)],
                       html.image(profile_png, "FHS profile"))
    (workdir / REPORT_FILE).write_text(page)
    return workdir / REPORT_FILE
