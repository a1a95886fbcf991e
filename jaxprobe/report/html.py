"""``report.html``: one self-contained page (plots embedded as data URIs) a clinician-researcher can read.

A run's page says what was analysed (dataset, model and revision, class counts per split, test size, skipped
images, the prompt), the layer-wise curve, the Feature Health profile with a sentence on what FHS means, each
failure-mode verdict with what it checks and why it got its status, the zero-shot answer (accuracy, AUROC,
per-class recall and its confusion matrix) and the probes' metrics with their intervals and p-values.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence

import pandas as pd

from jaxprobe.scoring.diagnosis import EXPLANATIONS, STATUS_EXPLANATIONS

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222;line-height:1.4}}
table{{border-collapse:collapse;font-size:13px;margin:0.5em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;
text-align:right}}th{{background:#f4f4f4}}td.name,th.name{{text-align:left}}
.flagged{{color:#b00;font-weight:bold}}.notflagged{{color:#070;font-weight:bold}}
.inconclusive{{color:#a60;font-weight:bold}}.note{{color:#555;font-size:13px}}.warn{{color:#a60}}
pre{{background:#f6f6f6;padding:0.6em;white-space:pre-wrap;font-size:12px}}img{{max-width:100%}}
.hit{{background:#fde2c8}}</style></head><body>
<h1>{title}</h1>{body}</body></html>"""
FHS_SENTENCE = ("The Feature Health Score (FHS) of a module summarises its layer-wise probe accuracy in one "
                "number: the accuracy at the module's end, raised when the module gains accuracy over its first and "
                "weakest layer and lowered when accuracy swings from layer to layer; higher is healthier "
                "(it can exceed 1), and P_final is the accuracy of the model's own answer.")
NOT_RECORDED = "not recorded"


def esc(value) -> str:
    return html.escape(str(value))


def image(png: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def number(value, digits: int = 3) -> str:
    """A table cell for a score: ``-`` where there is none (a module not probed, an undefined metric)."""
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else esc(value)


def percent(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def table(header: Sequence[str], rows: Sequence[Sequence], names: int = 1, highlight=None) -> str:
    """An HTML table; the first ``names`` columns are left-aligned text, ``highlight(r, c)`` marks cells."""
    head = "".join(f'<th class="{"name" if k < names else ""}">{esc(h)}</th>' for k, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        cells = []
        for c, cell in enumerate(row):
            css = ["name"] if c < names else []
            css += ["hit"] if highlight is not None and highlight(r, c) else []
            cells.append(f'<td class="{" ".join(css)}">{cell if c >= names else esc(cell)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def verdict_list(diagnosis: list[dict]) -> str:
    items = []
    for verdict in diagnosis:
        status = verdict.get("status", "flagged" if verdict["flagged"] else "not flagged")
        explanation = EXPLANATIONS.get(verdict["mode"], "")
        items.append(f'<li><b>{esc(verdict["mode"])}</b>: <span class="{status.replace(" ", "")}">{esc(status)}'
                     f'</span>. <span class="note">{esc(explanation)}</span><br>{esc(verdict.get("reason", ""))}. '
                     f'Evidence: {esc(verdict["evidence"])}.</li>')
    legend = "; ".join(f"<i>{esc(status)}</i>: {esc(text)}" for status, text in STATUS_EXPLANATIONS.items())
    note = "Verdict intervals are at the probes' CI level: the wider of the bootstrap and the Wilson score interval"
    return f"<ul>{''.join(items)}</ul><p class=\"note\">{legend}. {note}.</p>"


def summary_sentence(scores: dict) -> str:
    """A one-line verdict a clinician-researcher can read."""
    statuses = [(v["mode"], v.get("status", "flagged" if v["flagged"] else "not flagged")) for v in scores["diagnosis"]]
    flagged = [mode for mode, status in statuses if status == "flagged"]
    unclear = [mode for mode, status in statuses if status == "inconclusive"]
    where = "signal is lost at: " + "; ".join(flagged) if flagged else "no failure mode is flagged"
    if unclear:
        where += f" ({len(unclear)} of {len(statuses)} checks inconclusive)"
    modules, profile = scores["modules"], scores["profile"]
    parts = []
    if "vision" in modules:
        parts.append(f"probes reach {modules['vision']['end']:.0%} after the vision tower")
    if "llm_image" in modules:
        parts.append(f"{modules['llm_image']['end']:.0%} at the last LLM layer")
    if profile.get("final") is not None:
        parts.append(f"the model's own answer is right {profile['final']:.0%} of the time")
    reached = ("; ".join(parts) + ". ") if parts else ""
    return f"{reached[:1].upper()}{reached[1:]}Verdict: {where}."


def facts_section(scores: dict, facts: Mapping[str, str], skipped: Sequence[Mapping[str, str]],
                  prompt: str | None) -> str:
    """What was analysed: dataset, model, split counts, test size, skipped inputs, the prompt."""
    test = scores.get("test", {})
    rows = [(key, esc(value)) for key, value in facts.items()]
    rows.append(("test images", esc(f"{test.get('size', '?')} (chance = majority-class rate "
                                     f"{number(test.get('chance'))})")))
    rows.append(("skipped inputs", esc(len(skipped))))
    counts = scores.get("split_counts", {})
    classes = scores["class_names"]
    count_rows = [(split, *[esc(per.get(name, 0)) for name in classes], esc(sum(per.values())))
                  for split, per in counts.items()]
    parts = ["<h3>What was analysed</h3>", table(["", "value"], rows),
             "<h4>Images per split and class</h4>", table(["split", *classes, "total"], count_rows)]
    if skipped:
        shown = "".join(f"<li>{esc(item.get('id'))}: {esc(item.get('reason'))}</li>" for item in skipped[:20])
        more = f"<li>... and {len(skipped) - 20} more</li>" if len(skipped) > 20 else ""
        parts.append(f"<h4>Skipped inputs</h4><ul>{shown}{more}</ul>")
    parts.append(f"<h4>Prompt</h4><pre>{esc(prompt) if prompt else NOT_RECORDED}</pre>")
    gaps = []
    if scores.get("missing_modules"):
        gaps.append("modules not probed (their scores are blank and the checks that need them inconclusive): "
                    + ", ".join(scores["missing_modules"]))
    if scores.get("unplaced_sites"):
        gaps.append("sites that could not be placed in a module (named outside vision.layer_NN, "
                    "connector.output, llm.layer_NN.*): " + ", ".join(scores["unplaced_sites"]))
    parts += [f'<p class="warn">{esc(gap)}</p>' for gap in gaps]
    return "".join(parts)


def answer_section(scores: dict) -> str:
    """The zero-shot answer: accuracy, AUROC, recall per class, confusion matrix, calibration."""
    answer, calibration = scores.get("answer"), scores.get("calibration")
    if not answer:
        return "<h3>Zero-shot answer</h3><p>The feature store holds no zero-shot answers.</p>"
    classes = scores["class_names"]
    recall = ", ".join(f"{esc(name)} {percent(answer['recall'][name])}" for name in classes)
    matrix = [(f"true {name}", *[esc(v) for v in row]) for name, row in zip(classes, answer["confusion"], strict=True)]
    dominant = max(answer["answered"].values()) if answer["answered"] else 0
    total = sum(answer["answered"].values())
    warning = ""
    if total and dominant == total:
        warning = ('<p class="warn">The model gave the same answer for every test image: its accuracy is that '
                   "class's share of the test set, not a reading of the images.</p>")
    option_accuracy = next((row["accuracy"] for row in scores["curve"] if row["site"] == "answer"), None)
    text = (f"<p>Read from the option letters' scores: accuracy {percent(option_accuracy)}, AUROC "
            f"{number(answer.get('auroc'))}; recall per class: {recall}.</p>")
    if calibration:
        text += (f"<p>Calibration: ECE {number(calibration['ece'])}; {percent(calibration['confident_wrong_rate'])} "
                 f"of {calibration['confident_answers']} answers given with p >= 0.9 are wrong.</p>")
    confusion = table(["", *[f"answered {name}" for name in classes]], matrix,
                      highlight=lambda r, c: c == r + 1)
    return (f"<h3>Zero-shot answer</h3>{generated_part(scores)}{text}{warning}"
            f"<h4>Confusion matrix of the option-score answer (test images)</h4>{confusion}{reliability_part(scores)}")


def generated_part(scores: dict) -> str:
    """The generated reply (the study's P_final): accuracy, unparseable replies, confusion matrix."""
    generated = scores.get("generated")
    if not generated:
        return ("<p>The model's reply was not generated (capture.answer = scores): P_final is the option-score "
                "answer.</p>")
    classes = scores["class_names"]
    how = ", ".join(f"{esc(reason)}: {count}" for reason, count in generated["how"].items())
    examples = "".join(f"<li><pre>{esc(text)}</pre></li>" for text in generated["examples"])
    matrix = [(f"true {name}", *[esc(v) for v in row]) for name, row in zip(classes, generated["confusion"],
                                                                           strict=True)]
    return (f"<p>Generated reply (P_final, as the study measured it): accuracy {percent(generated['accuracy'])}; "
            f"{generated['unparseable']} replies ({percent(generated['unparseable_rate'])}) could not be mapped to "
            f"one class and count as wrong. How replies were read: {how or '-'}.</p>"
            + (f"<p>Unparseable replies, e.g.:</p><ul>{examples}</ul>" if examples else "")
            + "<h4>Confusion matrix of the generated reply (test images)</h4>"
            + table(["", *[f"answered {name}" for name in classes], "unparseable"], matrix,
                    highlight=lambda r, c: c == r + 1))


def reliability_part(scores: dict) -> str:
    """Accuracy under permuted options and paraphrased questions, and how often the answers agree."""
    found = scores.get("reliability")
    if not found:
        return ""
    rows = [(name, percent(accuracy)) for name, accuracy in found["variants"].items()]
    return ("<h4>Reliability of the answer</h4><p>The same test images asked with the options in other orders and "
            f"with paraphrased questions: every variant gives the same class for {percent(found['all_agree'])} of "
            f"the images; two variants agree on {percent(found['pairwise_agreement'])} on average.</p>"
            + table(["variant", "accuracy"], rows))


def probe_table(scores: dict) -> str:
    """Per site: accuracy with interval, balanced accuracy, AUROC, recall per class, control task, p-value."""
    curve = pd.DataFrame(scores["curve"])
    classes = scores["class_names"]
    recall_columns = [f"recall_{k}" for k in range(len(classes)) if f"recall_{k}" in curve]
    header = ["site", "accuracy", "interval", "balanced acc.", "AUROC",
              *[f"recall {classes[int(c.split('_')[1])]}" for c in recall_columns], "control task", "perm. p"]
    rows = []
    for record in curve.to_dict(orient="records"):
        interval = f"{number(record.get('ci_low'))}-{number(record.get('ci_high'))}"
        rows.append((record["site"], number(record["accuracy"]), interval, number(record.get("balanced_accuracy")),
                     number(record.get("auroc")), *[number(record.get(c)) for c in recall_columns],
                     number(record.get("control_accuracy")), number(record.get("perm_p"))))
    note = ('<p class="note">perm. p: share of label-permuted probes that did as well (small means the site carries '
            "class signal); control task: the same probe on patient-shuffled labels.</p>")
    return f"<h3>Probe metrics per site ({esc(scores['kind'])})</h3>{table(header, rows)}{note}"


def run_section(name: str, scores: dict, curve_png: bytes, facts: Mapping[str, str] | None = None,
                skipped: Sequence[Mapping[str, str]] = (), prompt: str | None = None) -> str:
    profile = [(*[number(scores["profile"].get(k)) for k in ("vision", "connector", "llm", "final")],)]
    final_header = f"P_final ({scores.get('final_source') or 'no answer'})"
    return (f"<h2>{esc(name)}</h2><p>{esc(summary_sentence(scores))}</p>"
            f"{facts_section(scores, facts or {}, skipped, prompt)}"
            f"<h3>Layer-wise probe accuracy</h3>{image(curve_png, name + ' layer-wise accuracy')}"
            f"<h3>Feature Health profile</h3><p class=\"note\">{esc(FHS_SENTENCE)}</p>"
            f"{table(['FHS vision', 'FHS connector', 'FHS LLM', final_header], profile, names=0)}"
            f"<h3>Failure modes</h3>{verdict_list(scores['diagnosis'])}"
            f"{answer_section(scores)}{probe_table(scores)}")


def render(title: str, sections: list[str], extra: str = "") -> str:
    return PAGE.format(title=esc(title), body="".join(sections) + extra)
