"""`jaxprobe probe` then `jaxprobe score` on a feature store with every module: files, agreement, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from jaxprobe.cli import main
from jaxprobe.features import FeatureStoreWriter

SITES = ["vision.layer_00", "vision.layer_01", "connector.output", "llm.layer_00.image_mean",
         "llm.layer_00.last_token", "llm.layer_01.image_mean", "llm.layer_01.last_token"]
FAST = ["probe.folds=3", "probe.permutations=3", "probe.bootstrap=50", "probe.logistic_lambdas=(1.0, 0.01)",
        "probe.ridge_lambdas=(100.0, 1.0)"]


def _store(path, n: int = 90, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    index = pd.DataFrame({"row": np.arange(n), "id": [f"i{k}" for k in range(n)], "label": labels,
                          "split": np.where((np.arange(n) // 3) % 3 == 0, "test", "train"),  # whole patients
                          "group": [f"p{k // 3}" for k in range(n)]})
    strengths = np.linspace(2.0, 0.5, len(SITES))
    features = {site: (rng.normal(size=(n, 6)) + s * np.eye(3, 6)[labels]).astype(np.float32)
                for site, s in zip(SITES, strengths, strict=True)}
    writer = FeatureStoreWriter(path, index, ["a", "b", "c"], {s: 6 for s in SITES}, "fp")
    answers = pd.DataFrame({"answer_pred": np.where(rng.random(n) < 0.6, labels, (labels + 1) % 3),
                            "answer_prob": rng.uniform(0.4, 1.0, n)})
    writer.write_chunk(0, features, answers)
    return pd.read_parquet(path / "index.parquet")


def _overrides(extra=()):
    return [arg for o in [*FAST, *extra] for arg in ("--set", o)]


def test_probe_then_score(tmp_path, capsys):
    index = _store(tmp_path / "features")
    assert main(["probe", str(tmp_path), *_overrides()]) == 0
    assert main(["score", str(tmp_path), *_overrides()]) == 0
    assert str(tmp_path / "report.html") in capsys.readouterr().out
    scores = json.loads((tmp_path / "scores.json").read_text())
    test = index[index.split == "test"]
    assert scores["profile"]["final"] == (test.answer_pred == test.label).mean()
    curve_sites = {row["site"] for row in scores["curve"]}
    assert curve_sites == {*SITES, "answer"}
    assert "semantic-mapping misalignment" in (tmp_path / "report.html").read_text()


def test_missing_stage_says_which_to_run(tmp_path, capsys):
    assert main(["score", str(tmp_path)]) == 2
    assert "jaxprobe probe" in capsys.readouterr().err
    assert main(["probe", str(tmp_path)]) == 2
    assert "jaxprobe extract" in capsys.readouterr().err
