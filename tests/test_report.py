"""The report: files exist, the HTML is self-contained, plots are real PNGs, verdicts are printed."""

from __future__ import annotations

import html

import pandas as pd

from jaxprobe.report.write import write_report
from jaxprobe.scoring.diagnosis import Thresholds
from jaxprobe.scoring.profile import ScoreSettings, score_run
from tests.test_diagnosis import HEALTHY, _probe_rows
from tests.test_profile import _index


def test_report_files(tmp_path):
    probes = _probe_rows({k: v for k, v in dict(HEALTHY, connector=[0.8]).items() if k != "answer"})
    scores = score_run(probes, _index(), ScoreSettings(thresholds=Thresholds(min_test_images=20), resamples=100),
                       ["no", "yes"])
    page = write_report(tmp_path, "tiny-model x synthetic", scores).read_text()
    assert page.count("data:image/png;base64,") == 2 and "src=\"http" not in page
    assert "connector projection fidelity</b>: <span class=\"inconclusive\">inconclusive" in page
    for name in ("curve.png", "profile.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "scores.json").exists()  # scores.json belongs to the scoring stage, not the report
    summary = pd.read_parquet(tmp_path / "summary.parquet")
    assert summary.loc[0, "status_connector"] == "inconclusive" and summary.loc[0, "run"] == "tiny-model x synthetic"


def _always_d_scores(tmp_path):
    """A 4-class run whose model answers "D" for every image, with a manifest as extraction leaves it."""
    import json

    import numpy as np

    from jaxprobe.config import load_config
    from jaxprobe.scoring.run import write_scores

    n = 80
    labels = np.arange(n) % 4
    index = pd.DataFrame({"row": np.arange(n), "id": [f"i{k}" for k in range(n)], "label": labels,
                          "split": np.where(np.arange(n) < 40, "test", "train"), "group": "g",
                          "answer_pred": np.full(n, 3), "answer_prob": np.full(n, 0.97),
                          **{f"answer_score_{k}": np.full(n, 0.01 + 0.96 * (k == 3)) for k in range(4)}})
    probes = _probe_rows({k: v for k, v in HEALTHY.items() if k != "answer"})
    probes["auroc"], probes["recall_0"], probes["balanced_accuracy"] = 0.912, 0.733, 0.871
    scores = score_run(probes, index, ScoreSettings(resamples=50), ["A", "B", "C", "D"])
    write_scores(tmp_path / "scores.json", scores)
    config = load_config("demo", ["model.checkpoint=Qwen/Qwen2.5-VL-7B-Instruct", "model.revision=abc123"])
    extract = {"revision": "abc123def", "family": "qwen_vl",
               "prompt": "Which of the following best describes this medical image?",
               "skipped": [{"id": "benign/broken.png", "reason": "OSError: truncated"}]}
    (tmp_path / "manifest.json").write_text(json.dumps({"config": config.to_dict(), "stages": {"extract": extract}}))


def test_report_tells_a_reader_what_was_analysed_and_what_it_means(tmp_path):
    from jaxprobe.report.html import FHS_SENTENCE
    from jaxprobe.report.write import report_workdir
    from jaxprobe.scoring.diagnosis import EXPLANATIONS, OPTION_SCORE_MODE

    _always_d_scores(tmp_path)
    page = report_workdir(tmp_path).read_text()
    for text in ("synthetic_lesions (small)", "Qwen/Qwen2.5-VL-7B-Instruct (qwen_vl family, float32)", "abc123def",
                 "grouped (seed 0)", "40 (chance = majority-class rate 0.250)", "benign/broken.png: OSError",
                 "Which of the following best describes this medical image?", "Images per split and class",
                 FHS_SENTENCE, *[text for mode, text in EXPLANATIONS.items() if mode != OPTION_SCORE_MODE],
                 "AUROC", "0.912", "recall A", "0.733", "perm. p",
                 "answered D", "gave the same answer for every test image", "Confusion matrix"):
        assert html.escape(text) in page, text
    matrix = page[page.index("Confusion matrix"):]
    assert all(f"<td class=\"name\">true {name}</td><td class=\"{'hit' if name == 'A' else ''}\">0</td>" in matrix
               for name in "ABC")  # nobody is answered A, B or C: the "D" column holds every image
    assert matrix.count(">10</td>") == 4


def test_legends_never_cover_the_plot(monkeypatch):
    """Every legend sits outside its axes (to the right), so it cannot hide a curve, a band or a bar."""
    from jaxprobe.report import plots

    figures = []
    monkeypatch.setattr(plots, "_png", lambda figure: figures.append(figure) or b"")
    curve = pd.DataFrame(score_run(_probe_rows(HEALTHY), _index(), ScoreSettings(resamples=20), ["no", "yes"])
                         ["curve"])
    plots.curve_figure(curve, "run", chance=0.5)
    plots.profile_figure({"a": {"vision": 0.9, "connector": None, "llm": 0.8, "final": 0.7}}, "profiles")
    plots.overlay_figure({"a": curve, "b": curve}, "overlay")
    for figure in figures:
        figure.canvas.draw()
        for axis in figure.axes:
            legend, box = axis.get_legend(), axis.get_window_extent()
            assert legend is not None and legend.get_window_extent().x0 >= box.x1


def test_compare_warns_when_class_sets_differ(tmp_path, capsys):
    from jaxprobe.cli import main
    from jaxprobe.scoring.run import write_scores

    probes = _probe_rows(HEALTHY)
    for run, classes in (("busi", ["benign", "malignant"]), ("chest", ["NORMAL", "PNEUMONIA"]),
                         ("busi_again", ["benign", "malignant"])):
        scores = score_run(probes, _index(), ScoreSettings(resamples=20), classes)
        (tmp_path / run).mkdir()
        write_scores(tmp_path / run / "scores.json", scores)
        write_report(tmp_path / run, run, scores)
    assert main(["compare", str(tmp_path / "busi"), str(tmp_path / "busi_again"), "--out", str(tmp_path / "same")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "busi"), str(tmp_path / "chest"), "--out", str(tmp_path / "mixed")]) == 0
    err = capsys.readouterr().err
    assert "warning: these runs classify different class sets (busi: benign, malignant; chest: NORMAL, PNEUMONIA)" \
        in err
    page = (tmp_path / "mixed" / "comparison.html").read_text()
    assert "Warning: these runs classify different class sets" in page
    assert pd.read_parquet(tmp_path / "mixed" / "comparison.parquet").classes.tolist() == ["benign, malignant",
                                                                                           "NORMAL, PNEUMONIA"]
    (tmp_path / "chest" / "scores.json").write_text("{not json")
    assert main(["compare", str(tmp_path / "busi"), str(tmp_path / "chest"), "--out", str(tmp_path / "x")]) == 2
    assert "unreadable" in capsys.readouterr().err
