"""``report.html``: one self-contained page (plots embedded as data URIs) with a verdict per run."""

from __future__ import annotations

import base64
import html

import pandas as pd

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
.flag{{color:#b00;font-weight:bold}}.ok{{color:#070}}img{{max-width:100%}}</style></head><body>
<h1>{title}</h1>{body}</body></html>"""


def image(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def verdict_list(diagnosis: list[dict]) -> str:
    items = []
    for verdict in diagnosis:
        css, word = ("flag", "yes") if verdict["flagged"] else ("ok", "no")
        significance = {True: ", intervals separate", False: ", intervals overlap (not significant)",
                        None: ""}[verdict["significant"]]
        items.append(f'<li><b>{html.escape(verdict["mode"])}</b>: <span class="{css}">{word}</span>: '
                     f"{html.escape(verdict['evidence'])}{significance}</li>")
    return "<ul>" + "".join(items) + "</ul>"


def summary_sentence(scores: dict) -> str:
    """A one-line verdict a clinician-researcher can read."""
    flagged = [v["mode"] for v in scores["diagnosis"] if v["flagged"]]
    profile = scores["profile"]
    where = "no failure mode crosses its threshold" if not flagged else "signal is lost at: " + "; ".join(flagged)
    return (f"Probes reach {scores['modules']['vision']['end']:.0%} after the vision tower and "
            f"{scores['modules']['llm_image']['end']:.0%} at the last LLM layer; the model's own answer is right "
            f"{profile['final']:.0%} of the time. Verdict: {where}.")


def run_section(name: str, scores: dict, curve_png: bytes) -> str:
    table = pd.DataFrame([scores["profile"]]).round(3).to_html(index=False)
    calibration = scores["calibration"]
    return (f"<h2>{html.escape(name)}</h2><p>{html.escape(summary_sentence(scores))}</p>"
            f"{image(curve_png, name + ' layer-wise accuracy')}<h3>Feature Health profile</h3>{table}"
            f"<h3>Failure modes</h3>{verdict_list(scores['diagnosis'])}"
            f"<p>Answer calibration: ECE {calibration['ece']:.3f}; {calibration['confident_wrong_rate']:.0%} of "
            f"{calibration['confident_answers']} answers given with p >= 0.9 are wrong.</p>")


def render(title: str, sections: list[str], extra: str = "") -> str:
    return PAGE.format(title=html.escape(title), body="".join(sections) + extra)
