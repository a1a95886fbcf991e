"""The before/after page of a fine-tuned run: curves overlaid, FHS profiles, zero-shot vs fine-tuned P_final, and
the vision-tower baseline (``report.plots``' overlay and profile figures, from the two runs' scores.json)."""

from __future__ import annotations

import html as html_escape
import json
from pathlib import Path
from typing import Any

import pandas as pd

from jaxprobe.report import html, plots
from jaxprobe.workdir import BEFORE_AFTER_FILE, REPORT_FILE, SCORES_FILE

LABELS = {"before": "zero-shot (base model)", "after": "fine-tuned (LoRA)"}


def profile_table(scores: dict[str, dict], baseline: dict | None) -> pd.DataFrame:
    """One row per run: the FHS profile, P_final, the vision tower's last probe and the baseline it is held to."""
    rows = []
    for name, run in scores.items():
        vision_end = run["modules"]["vision"]["end"]
        rows.append({"run": LABELS.get(name, name), **{f"FHS {k}" if k != "final" else "P_final": v
                                                       for k, v in run["profile"].items()},
                     "vision probe (last layer)": vision_end,
                     "vision baseline (tower + head)": baseline["accuracy"] if baseline else None})
    return pd.DataFrame(rows)


def training_table(summary: dict[str, Any]) -> pd.DataFrame:
    """Accuracy of the answer (option scores) on train and val before and after LoRA SFT."""
    lora = summary.get("lora")
    if not lora:
        return pd.DataFrame()
    return pd.DataFrame([{"split": split, "before": lora["before"][split]["accuracy"],
                          "after": lora["after"][split]["accuracy"], "loss before": lora["before"][split]["loss"],
                          "loss after": lora["after"][split]["loss"]} for split in ("train", "val")])


def write_before_after(root: str | Path, runs: dict[str, Path], summary: dict[str, Any]) -> Path:
    """``<root>/report.html``, ``overlay.png``, ``profiles.png`` and ``before_after.json`` for the two runs."""
    root = Path(root)
    scores = {name: json.loads((Path(workdir) / SCORES_FILE).read_text()) for name, workdir in runs.items()}
    baseline = summary.get("vision")
    overlay = plots.overlay_figure({LABELS[name]: pd.DataFrame(run["curve"]) for name, run in scores.items()},
                                   "layer-wise accuracy before and after fine-tuning")
    profiles = plots.profile_figure({LABELS[name]: run["profile"] for name, run in scores.items()},
                                    "Feature Health profiles before and after fine-tuning")
    (root / "overlay.png").write_bytes(overlay)
    (root / "profiles.png").write_bytes(profiles)
    table = profile_table(scores, baseline)
    facts = {"profiles": {name: run["profile"] for name, run in scores.items()},
             "p_final": {name: run["profile"]["final"] for name, run in scores.items()},
             "vision_baseline": baseline["accuracy"] if baseline else None,
             "runs": {name: str(workdir) for name, workdir in runs.items()}}
    (root / BEFORE_AFTER_FILE).write_text(json.dumps(facts, indent=1))
    baseline_text = ("no vision-tower baseline (finetune.vision.enabled=False)" if not baseline else
                     f"the vision tower fine-tuned with a linear head ({baseline['method']}) reaches "
                     f"{baseline['accuracy']:.3f} on test; both runs' visual verdicts compare against it")
    sections = [f"<p>P_final {scores['before']['profile']['final']:.3f} zero-shot -> "
                f"{scores['after']['profile']['final']:.3f} fine-tuned; {html_escape.escape(baseline_text)}.</p>",
                table.round(3).to_html(index=False), html.image(overlay, "overlay"), html.image(profiles, "profiles"),
                "<h2>LoRA SFT (answer accuracy by option scores)</h2>",
                training_table(summary).round(3).to_html(index=False)]
    sections += [f"<h2>{LABELS[name]}</h2><p>{html_escape.escape(html.summary_sentence(run))}</p>"
                 for name, run in scores.items()]
    (root / REPORT_FILE).write_text(html.render("jaxprobe: before and after fine-tuning", sections))
    return root / REPORT_FILE
