"""Write a run's report files from its scores.json (and the facts manifest.json records): summary.parquet,
curve.png, profile.png, report.html."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd

from jaxprobe.report import html, plots
from jaxprobe.workdir import MANIFEST_FILE, REPORT_FILE, SCORES_FILE, SUMMARY_FILE


@dataclasses.dataclass(frozen=True)
class RunFacts:
    """What the report says was analysed, from the manifest's resolved config and extract stage."""

    facts: dict[str, str]
    skipped: list[dict[str, str]]
    prompt: str | None


def run_facts(workdir: Path) -> RunFacts:
    """Dataset, model and revision, prompt and skipped inputs as recorded; "not recorded" for a user-made store."""
    path = workdir / MANIFEST_FILE
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    config, extract = manifest.get("config", {}), manifest.get("stages", {}).get("extract", {})
    data, model = config.get("data", {}), config.get("model", {})
    dataset = data.get("name", html.NOT_RECORDED) + (f" ({data['config']})" if data.get("config") else "")
    if data.get("manual_dir"):
        dataset += f" from {data['manual_dir']}"
    revision = extract.get("revision") or model.get("revision") or "none pinned"
    family = extract.get("family") or model.get("family") or "?"
    facts = {"dataset": dataset,
             "model": f"{model.get('checkpoint', html.NOT_RECORDED)} ({family} family, {model.get('dtype', '?')})",
             "revision": revision,
             "split": f"{config.get('split', {}).get('strategy', html.NOT_RECORDED)} (seed "
                      f"{config.get('split', {}).get('seed', '?')})"}
    return RunFacts(facts, list(extract.get("skipped", [])), extract.get("prompt"))


def summary_table(name: str, scores: dict) -> pd.DataFrame:
    """One row per run: profile, module ends, retention and which failure modes are flagged."""
    row = {"run": name, "kind": scores["kind"], **{f"fhs_{k}" if k != "final" else "p_final": v
                                                  for k, v in scores["profile"].items()}}
    row.update({f"retention_{k}": v for k, v in scores["retention"].items()})
    row.update({f"flag_{v['mode'].split()[0].lower()}": v["flagged"] for v in scores["diagnosis"]})
    row.update({f"status_{v['mode'].split()[0].lower()}": v["status"] for v in scores["diagnosis"]})
    row.update({f"answer_{k}": v for k, v in (scores.get("calibration") or {}).items()})
    row["classes"] = ", ".join(scores["class_names"])
    row["test_images"] = scores["test"]["size"]
    return pd.DataFrame([row])


def report_workdir(workdir: str | Path, name: str | None = None) -> Path:
    """The report of a scored work directory (its scores.json); returns the path of report.html."""
    workdir = Path(workdir)
    scores = json.loads((workdir / SCORES_FILE).read_text())
    return write_report(workdir, name or workdir.name, scores, run_facts(workdir))


def write_report(workdir: str | Path, name: str, scores: dict, facts: RunFacts | None = None) -> Path:
    """All report files of one run into ``workdir``; returns the path of report.html."""
    workdir = Path(workdir)
    facts = facts or RunFacts({}, [], None)
    summary_table(name, scores).to_parquet(workdir / SUMMARY_FILE, index=False)
    curve = plots.curve_frame(scores["curve"])
    chance = scores["test"]["chance"]
    curve_png = plots.curve_figure(curve, f"{name} ({scores['kind']} probes)", chance=chance)
    profile_png = plots.profile_figure({name: scores["profile"]}, "Feature Health profile")
    (workdir / "curve.png").write_bytes(curve_png)
    (workdir / "profile.png").write_bytes(profile_png)
    section = html.run_section(name, scores, curve_png, facts.facts, facts.skipped, facts.prompt)
    page = html.render(f"jaxprobe report: {name}", [section], html.image(profile_png, "FHS profile"))
    (workdir / REPORT_FILE).write_text(page)
    return workdir / REPORT_FILE
