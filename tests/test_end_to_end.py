"""`jaxprobe run` on a tiny config: every stage's outputs exist and agree; resume; skips; clear refusals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from jaxprobe.capture import extract as extract_module
from jaxprobe.cli import main
from jaxprobe.config import load_config
from jaxprobe.errors import ConfigError
from jaxprobe.features import FeatureStore

FAST = ["probe.folds=3", "probe.permutations=3", "probe.bootstrap=100", "probe.logistic_lambdas=(1.0, 0.01)",
        "probe.ridge_lambdas=(100.0, 1.0)", "capture.resolution=32", "capture.chunk_rows=16"]


def _args(workdir, extra=()):
    return [arg for o in [*FAST, f"workdir={workdir}", *extra] for arg in ("--set", o)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """The README's demo command (with smaller probe grids), end to end."""
    workdir = tmp_path_factory.mktemp("run")
    assert main(["demo", "--workdir", str(workdir), *_args(workdir)]) == 0
    return workdir


def test_every_stage_output_exists_and_agrees(finished_run):
    workdir = finished_run
    for name in ("manifest.json", "features/meta.json", "probes.parquet", "scores.json", "summary.parquet",
                 "report.html", "curve.png"):
        assert (workdir / name).is_file(), name
    store = FeatureStore.open(workdir / "features")
    probes = pd.read_parquet(workdir / "probes.parquet")
    scores = json.loads((workdir / "scores.json").read_text())
    assert set(probes.site) == set(store.sites)
    assert {row["site"] for row in scores["curve"]} == set(store.sites) | {"answer", "answer.generated"}
    test = store.index[store.index.split == "test"]
    # P_final is the generated reply (the demo generates and scores); the option-score answer stays in the curve
    assert scores["final_source"] == "generated reply"
    assert scores["profile"]["final"] == pytest.approx((test.generated_pred == test.label).mean())
    option = next(row for row in scores["curve"] if row["site"] == "answer")
    assert option["accuracy"] == pytest.approx((test.answer_pred == test.label).mean())
    manifest = json.loads((workdir / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"extract", "probe", "score"}
    assert manifest["config"]["capture"]["resolution"] == 32 and manifest["versions"]["jax"]
    assert len(store.index) == 120 and store.index.split.isin(["train", "val", "test"]).all()
    assert store.site_layout == {"vision_depth": 2, "llm_depth": 2, "connector_source": "vision.layer_01",
                                 "vision_pooling": "mean_patches", "vision_cls": False}
    assert manifest["stages"]["extract"]["family"] == "qwen_vl"
    generated = store.index.generated_pred
    assert generated.between(-1, 2).all() and store.index.generated_text.map(type).eq(str).all()
    parsed = generated >= 0
    assert (store.index.generated_how[parsed].isin(["letter", "class name"])).all()


def test_second_run_skips_finished_stages(finished_run, capsys):
    before = (finished_run / "probes.parquet").stat().st_mtime
    assert main(["run", "demo", *_args(finished_run)]) == 0
    out = capsys.readouterr().out
    assert "probe: up to date" in out and "score: up to date" in out
    assert (finished_run / "probes.parquet").stat().st_mtime == before


def test_changed_capture_config_refuses_to_mix(finished_run, capsys):
    assert main(["extract", "demo", *_args(finished_run, ["capture.resolution=48"])]) == 2
    err = capsys.readouterr().err
    assert "features of another config" in err and "capture.resolution: 32 -> 48" in err


def test_a_new_split_relabels_the_store_without_extracting(finished_run, monkeypatch, tmp_path):
    """The README's `demo --set split.seed=3` after a finished demo: no model load, new split, probes rerun."""
    import shutil

    workdir = tmp_path / "copy"
    shutil.copytree(finished_run, workdir)
    before = FeatureStore.open(workdir / "features")

    def no_model(*args, **kwargs):
        raise AssertionError("a complete store must not load the model")

    monkeypatch.setattr(extract_module, "load_model", no_model)
    assert main(["run", "demo", *_args(workdir, ["split.seed=3"])]) == 0
    after = FeatureStore.open(workdir / "features")
    assert not (after.index.split == before.index.split).all()
    np.testing.assert_array_equal(after.load("vision.layer_00"), before.load("vision.layer_00"))
    assert (workdir / "probes.parquet").stat().st_mtime > (finished_run / "probes.parquet").stat().st_mtime
    manifest = json.loads((workdir / "manifest.json").read_text())
    assert manifest["stages"]["extract"]["up_to_date"] and manifest["stages"]["extract"]["resplit"]
    assert manifest["config"]["split"]["seed"] == 3


def test_second_run_reads_no_safetensors(finished_run, monkeypatch, capsys):
    """A complete workdir: run's extract stage loads nothing (not even the cached params)."""
    from jaxprobe.weights import reader

    def no_reads(*args, **kwargs):
        raise AssertionError("safetensors read")

    monkeypatch.setattr(reader, "read_slice", no_reads)
    monkeypatch.setattr(reader, "read_header", no_reads)
    assert main(["run", "demo", *_args(finished_run)]) == 0


def test_crashed_first_extraction_does_not_block_the_workdir(tmp_path, monkeypatch):
    """A first run that dies before writing a row leaves a store a changed config may replace."""
    config = load_config("demo", [*FAST, f"workdir={tmp_path}", "capture.sites=('vision.*',)"])

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(extract_module.Answerer, "__call__", crash)
    with pytest.raises(KeyboardInterrupt):
        extract_module.run_extract(config)
    monkeypatch.undo()
    changed = load_config("demo", [*FAST, f"workdir={tmp_path}", "capture.sites=('connector.output',)"])
    extract_module.run_extract(changed)
    assert FeatureStore.open(tmp_path / "features").sites == ["connector.output"]


def test_killed_extraction_resumes_to_identical_features(tmp_path, monkeypatch):
    config = load_config("demo", [*FAST, f"workdir={tmp_path / 'a'}", "capture.sites=('vision.*',)"])
    real = extract_module.Answerer.__call__
    calls = {"n": 0}

    def forward_then_die(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(extract_module.Answerer, "__call__", forward_then_die)
    with pytest.raises(KeyboardInterrupt):
        extract_module.run_extract(config)
    monkeypatch.setattr(extract_module.Answerer, "__call__", real)
    extract_module.run_extract(config)
    fresh = load_config("demo", [*FAST, f"workdir={tmp_path / 'b'}", "capture.sites=('vision.*',)"])
    extract_module.run_extract(fresh)
    resumed, uninterrupted = FeatureStore.open(tmp_path / "a" / "features"), FeatureStore.open(tmp_path / "b" /
                                                                                               "features")
    for site in uninterrupted.sites:
        np.testing.assert_array_equal(resumed.load(site), uninterrupted.load(site))


def test_unwritable_workdir_is_reported_before_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="not writable"):
        extract_module.run_extract(load_config("demo", [*FAST, f"workdir={blocker / 'sub'}"]))
    assert not (tmp_path / "datasets").exists()  # refused before the dataset was built
    with pytest.raises(ConfigError, match="GiB"):
        extract_module.check_disk(tmp_path, 10**12, {"a": 4096}, 4)


def test_compare_runs(finished_run, tmp_path, capsys):
    import shutil

    other = tmp_path / "other_run"
    shutil.copytree(finished_run, other)
    assert main(["compare", str(finished_run), str(other), "--out", str(tmp_path / "cmp")]) == 0
    table = pd.read_parquet(tmp_path / "cmp" / "comparison.parquet")
    assert table.run.tolist() == [finished_run.name, "other_run"]
    page = (tmp_path / "cmp" / "comparison.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "Verdict:" in page
    assert main(["compare", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert "jaxprobe score" in capsys.readouterr().err


def test_logistic_matches_sklearn_on_tiny_model_features(finished_run):
    """The probe reference check on real captured features (tiny model, synthetic_lesions), not only digits."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from jaxprobe.probes.fit import fit_eval

    store = FeatureStore.open(finished_run / "features")
    train = np.flatnonzero(store.index.split == "train")
    test = np.flatnonzero(store.index.split == "test")
    labels = store.index.label.to_numpy()
    for site in ("vision.layer_01", "llm.layer_01.last_token"):
        x = np.asarray(store.load(site), np.float32)
        lam = 0.01
        ours = fit_eval({"logistic": [lam]}, x[train][None], labels[train][None], np.ones(len(train)), x[test][None],
                        len(store.class_names))["logistic"][0, 0, 0]
        scaler = StandardScaler().fit(x[train])
        model = LogisticRegression(C=1 / (lam * len(train)), tol=1e-10, max_iter=20000)
        model.fit(scaler.transform(x[train]).astype(np.float64), labels[train])
        reference = model.score(scaler.transform(x[test]), labels[test])
        assert abs((ours.argmax(-1) == labels[test]).mean() - reference) <= 0.005 + 1e-9, site


def test_a_checkpoint_converted_once_is_restored_from_the_params_cache(tmp_path, monkeypatch):
    """A second workdir on the same checkpoint restores the cached params: no safetensors tensor is read."""
    from jaxprobe.families.registry import family_by_name
    from jaxprobe.weights import reader

    checkpoint = family_by_name("qwen_vl").tiny_checkpoint(tmp_path / "ckpt", "qwen2_vl", seed=2)

    def config(name):
        return load_config("demo", [*FAST, f"workdir={tmp_path / name}", f"model.checkpoint={checkpoint}",
                                    f"model.cache_dir={tmp_path / 'cache'}", "capture.sites=('vision.*',)"])

    extract_module.run_extract(config("a"))

    def no_reads(*args, **kwargs):
        raise AssertionError("a safetensors tensor was read")

    monkeypatch.setattr(reader, "read_slice", no_reads)
    extract_module.run_extract(config("b"))
    stages = [json.loads((tmp_path / name / "manifest.json").read_text())["stages"]["extract"] for name in "ab"]
    assert [stage["params_cache_hit"] for stage in stages] == [False, True]
    first, second = FeatureStore.open(tmp_path / "a" / "features"), FeatureStore.open(tmp_path / "b" / "features")
    for site in first.sites:
        np.testing.assert_array_equal(first.load(site), second.load(site))


def test_answer_variants_for_reliability(tmp_path):
    config = load_config("demo", [*FAST, f"workdir={tmp_path}", "capture.sites=('connector.output',)",
                                  "capture.option_orders=3", "capture.paraphrases=('Pick one:\\n{options}\\n',)",
                                  "capture.answer=scores"])
    extract_module.run_extract(config)
    index = FeatureStore.open(tmp_path / "features").index
    for name in ("order1", "order2", "paraphrase1"):
        assert index[f"variant_{name}_pred"].between(0, 2).all()
    assert "generated_text" not in index
    prompts = json.loads((tmp_path / "manifest.json").read_text())["stages"]["extract"]["answer_variants"]
    assert "Pick one" in prompts["paraphrase1"]["prompt"] and "Pick one" not in prompts["main"]["prompt"]


def test_selection_matches_sklearn_on_tiny_model_features(finished_run):
    """Per-fold validation accuracy, the selected lambda and test accuracy equal GridSearchCV over a StandardScaler
    pipeline (per-fold scaling, same patient-grouped folds) on features captured from the tiny model.

    Folds hold ~27 rows, so one near-tied prediction (sklearn's own top-2 probabilities 2e-4 apart, measured)
    moves a fold's accuracy by 3.7 points: each fold may differ by one prediction, and the selected lambda must be
    sklearn's best or within that one prediction of it."""
    from sklearn.linear_model import RidgeClassifier
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from jaxprobe.probes.engine import ProbeSettings, ProbeTask, probe_task
    from jaxprobe.stats.folds import kfold
    from tests.test_probe_engine import LambdaLogistic

    store = FeatureStore.open(finished_run / "features")
    index = store.index
    train, test = np.flatnonzero(index.split == "train"), np.flatnonzero(index.split == "test")
    labels, groups = index.label.to_numpy(), index.group.astype(str).to_numpy()
    settings = ProbeSettings(folds=3, fold_scaling="fold", control_task=False, permutations=0, bootstrap=0)
    folds = kfold(labels[train], 3, 0, groups[train])
    one_prediction = 1.0 / min(len(held) for _, held in folds) + 1e-9
    for site in ("vision.layer_01", "llm.layer_01.last_token"):
        x = np.asarray(store.load(site), np.float32)
        rows = probe_task(ProbeTask([site], x[None], labels, groups, train, test, len(store.class_names)), settings)
        for kind, model, key in [("logistic", LambdaLogistic(), "lambdalogistic__lam"),
                                 ("ridge", RidgeClassifier(), "ridgeclassifier__alpha")]:
            grid = [float(lam) for lam in settings.lambdas(kind)]
            pipeline = make_pipeline(StandardScaler(), model)
            search = GridSearchCV(pipeline, {key: grid}, cv=folds).fit(x[train], labels[train])
            ours = rows[(rows.kind == kind) & (rows.split == "val")]
            for f in range(len(folds)):
                fold = ours[ours.fold == f].sort_values("lam", ascending=False).accuracy.to_numpy()
                np.testing.assert_allclose(fold, search.cv_results_[f"split{f}_test_score"], atol=one_prediction)
            chosen = rows[(rows.kind == kind) & rows.selected].iloc[0]
            position = grid.index(pytest.approx(float(chosen.lam), rel=1e-6))
            cv_means = search.cv_results_["mean_test_score"]
            assert cv_means[position] >= cv_means.max() - one_prediction, (site, kind)
            reference = pipeline.set_params(**{key: grid[position]}).fit(x[train], labels[train])
            assert abs(chosen.accuracy - reference.score(x[test], labels[test])) <= 0.005 + 1e-9, (site, kind)
