"""Standalone stages on a work directory: its own config by default, refusals that keep outputs consistent, the
manifest kept current, partial site selections, strict scores.json, and one writer at a time."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd

from jaxprobe.cli import main
from jaxprobe.config import load_config
from jaxprobe.features import FeatureStoreWriter
from jaxprobe.manifest import read_manifest, record_stage, settings_hash
from jaxprobe.run import _up_to_date
from jaxprobe.workdir import LOCK_FILE

ALL_SITES = ["vision.layer_00", "vision.layer_01", "connector.output", "llm.layer_00.image_mean",
             "llm.layer_00.last_token", "llm.layer_01.image_mean", "llm.layer_01.last_token"]
FAST = ["probe.folds=3", "probe.permutations=3", "probe.bootstrap=50", "probe.logistic_lambdas=(1.0, 0.01)",
        "probe.ridge_lambdas=(100.0, 1.0)", "capture.resolution=32"]


def _store(path, sites=ALL_SITES, n: int = 60, answers: bool = True) -> None:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    index = pd.DataFrame({"row": np.arange(n), "id": [f"i{k}" for k in range(n)], "label": labels,
                          "split": np.where((np.arange(n) // 3) % 3 == 0, "test", "train"),
                          "group": [f"p{k // 3}" for k in range(n)]})
    features = {site: (rng.normal(size=(n, 4)) + 1.5 * np.eye(3, 4)[labels]).astype(np.float32) for site in sites}
    writer = FeatureStoreWriter(path, index, ["a", "b", "c"], {s: 4 for s in sites}, "fp")
    frame = pd.DataFrame({"answer_pred": labels, "answer_prob": np.full(n, 0.7)}) if answers else None
    writer.write_chunk(0, features, frame)


def _as_if_extracted(workdir, overrides) -> None:
    """A work directory whose extract stage was recorded with ``overrides`` (what `jaxprobe run` leaves)."""
    _store(workdir / "features")
    config = load_config("demo", [*overrides, f"workdir={workdir}"])
    record_stage(workdir, "extract", config.to_dict(), {"settings": settings_hash(config, "extract")})


def _sets(overrides):
    return [arg for o in overrides for arg in ("--set", o)]


def test_standalone_probe_and_score_use_the_workdirs_config_and_record_their_stage(tmp_path, capsys):
    """Item 2: not the demo config; the manifest is kept current, so `run` sees what the stages did."""
    _as_if_extracted(tmp_path, FAST)
    assert main(["probe", str(tmp_path)]) == 0
    probes = pd.read_parquet(tmp_path / "probes.parquet")
    assert sorted(probes.loc[probes.kind == "ridge", "lam"].unique()) == [1.0, 100.0]  # the recorded grid
    assert probes[probes.split == "val"].fold.nunique() == 3  # recorded probe.folds=3, not the demo's 5
    assert main(["score", str(tmp_path)]) == 0
    manifest = read_manifest(tmp_path)
    recorded = load_config("demo", [*FAST, f"workdir={tmp_path}"])
    assert manifest["stages"]["probe"]["settings"] == settings_hash(recorded, "probe")
    assert _up_to_date(tmp_path, "probe", tmp_path / "probes.parquet", tmp_path / "features" / "meta.json", recorded)
    assert _up_to_date(tmp_path, "score", tmp_path / "scores.json", tmp_path / "probes.parquet", recorded)

    assert main(["probe", str(tmp_path), "--set", "probe.folds=4"]) == 0  # a changed probe stage is recorded ...
    assert read_manifest(tmp_path)["config"]["probe"]["folds"] == 4
    assert not _up_to_date(tmp_path, "probe", tmp_path / "probes.parquet", tmp_path / "features" / "meta.json",
                           recorded)  # ... so `run` with the original config re-probes instead of "up to date"


def test_a_config_the_features_were_not_made_with_is_refused(tmp_path, capsys):
    _as_if_extracted(tmp_path, FAST)
    before = (tmp_path / "manifest.json").read_text()
    assert main(["probe", str(tmp_path), "--config", "demo"]) == 2  # demo's capture.resolution is 64, not 32
    err = capsys.readouterr().err
    assert "other values of ['capture.resolution']" in err and "Traceback" not in err
    assert main(["probe", str(tmp_path), "--set", "data.config=default"]) == 2
    assert "['data.config']" in capsys.readouterr().err
    assert main(["probe", str(tmp_path), "--set", "split.seed=3"]) == 2  # the store's split column is extract's
    assert "['split.seed']" in capsys.readouterr().err
    assert not (tmp_path / "probes.parquet").exists() and (tmp_path / "manifest.json").read_text() == before
    assert main(["probe", str(tmp_path)]) == 0
    assert main(["score", str(tmp_path), "--set", "probe.bootstrap=10"]) == 2  # probes were made with 50
    assert "['probe.bootstrap']" in capsys.readouterr().err and not (tmp_path / "scores.json").exists()


def test_partial_site_selection_scores_what_is_there(tmp_path, capsys):
    """Item 5: the README's capture.sites=("vision.*", "llm.*.last_token") scores without a traceback."""
    partial = [s for s in ALL_SITES if s.startswith("vision") or s.endswith("last_token")] + ["my.own_site"]
    _store(tmp_path / "features", partial)
    overrides = _sets(FAST)
    assert main(["probe", str(tmp_path), *overrides]) == 0
    assert main(["score", str(tmp_path), *overrides]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["missing_modules"] == ["connector", "llm_image"] and scores["unplaced_sites"] == ["my.own_site"]
    assert scores["profile"]["connector"] is None and scores["profile"]["llm"] is None
    assert scores["profile"]["vision"] is not None and scores["retention"]["vision_to_connector"] is None
    status = {v["mode"]: v for v in scores["diagnosis"]}
    assert "did not probe" in status["connector projection fidelity"]["reason"]
    page = (tmp_path / "report.html").read_text()
    assert "modules not probed" in page and "connector, llm_image" in page and "my.own_site" in page

    foreign = tmp_path / "copied"  # probes without a manifest, scored for a kind that was not fitted
    shutil.copytree(tmp_path / "features", foreign / "features")
    shutil.copy(tmp_path / "probes.parquet", foreign)
    assert main(["score", str(foreign), *_sets([*FAST, "probe.kinds=('ridge', 'logistic', 'mlp')",
                                                "scoring.kind=mlp"])]) == 2
    err = capsys.readouterr().err
    assert "scoring.kind='mlp', but probes.parquet holds selected probes of kinds ['logistic', 'ridge']" in err


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"bare {constant} in scores.json")

    return json.loads(text, parse_constant=refuse)


def test_scores_json_is_strict_json(tmp_path):
    _store(tmp_path / "features")
    overrides = _sets([*FAST, "probe.bootstrap=0", "probe.permutations=0", "probe.control_task=False"])
    assert main(["probe", str(tmp_path), *overrides]) == 0
    assert main(["score", str(tmp_path), *overrides]) == 0
    scores = _strict((tmp_path / "scores.json").read_text())  # no bare NaN, Infinity
    assert scores["curve"][0]["ci_low"] is None and scores["curve"][0]["perm_p"] is None


def test_store_without_answers_scores_its_probes(tmp_path):
    _store(tmp_path / "features", answers=False)
    assert main(["probe", str(tmp_path), *_sets(FAST)]) == 0
    assert main(["score", str(tmp_path), *_sets(FAST)]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["profile"]["final"] is None and scores["missing_modules"] == ["answer"]


def test_two_processes_on_one_workdir(tmp_path, capsys):
    _store(tmp_path / "features")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom jaxprobe.workdir import directory_lock\n"
                               f"with directory_lock({str(tmp_path)!r}, 'run demo'):\n"
                               "    print('locked', flush=True)\n    time.sleep(60)\n"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["probe", str(tmp_path), *_sets(FAST)]) == 2
        err = capsys.readouterr().err
        assert f"is in use by another jaxprobe process (pid {holder.pid}, `jaxprobe run demo`" in err
        assert not (tmp_path / "probes.parquet").exists()
    finally:
        holder.kill()  # a killed holder releases the lock: the next command runs
        holder.wait()
        holder.stdout.close()
    time.sleep(0.1)
    assert main(["probe", str(tmp_path), *_sets(FAST)]) == 0
    assert not (tmp_path / LOCK_FILE).exists()


def test_tiny_checkpoint_refuses_a_non_empty_target(tmp_path, capsys):
    """Item 8."""
    out = tmp_path / "ckpt"
    assert main(["tiny-checkpoint", "qwen2_5_vl", "--out", str(out)]) == 0
    first = (out / "model.safetensors").read_bytes()
    assert main(["tiny-checkpoint", "qwen2_5_vl", "--out", str(out), "--seed", "1"]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == first
    assert main(["tiny-checkpoint", "qwen2_5_vl", "--out", str(out), "--seed", "1", "--force"]) == 0
    assert (out / "model.safetensors").read_bytes() != first
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    assert main(["tiny-checkpoint", "qwen2_5_vl", "--out", str(other), "--force"]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err and (other / "thesis.tex").read_text() == "precious"
