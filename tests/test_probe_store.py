"""`jaxprobe probe` on stores: user-made stores, site subsets (--sites) merged into probes.parquet, refusal to mix
settings, chunks sized to the memory budget, the random-weights baseline, and validated settings."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from jaxprobe.cli import main
from jaxprobe.config import config_from_dict, load_config
from jaxprobe.errors import ConfigError, FeatureError
from jaxprobe.features import FeatureStore
from jaxprobe.manifest import settings_hash
from jaxprobe.probes import store as store_io
from jaxprobe.probes.run import probe_store, run_probes
from jaxprobe.probes.settings import ProbeSettings, settings_from_config

SITES = ["encoder.block1", "encoder.block2", "head-features"]  # not DESIGN names: probed all the same
FAST = ProbeSettings(ridge_lambdas=(10.0, 0.1), logistic_lambdas=(1.0, 0.01), folds=3, permutations=19,
                     bootstrap=20)
FAST_CLI = ["probe.folds=3", "probe.permutations=19", "probe.bootstrap=20", "probe.logistic_lambdas=(1.0, 0.01)",
            "probe.ridge_lambdas=(10.0, 0.1)"]


def _user_store(path, labels, splits, sites=SITES, class_names=("benign", "malignant"), index_extra=None,
                seed=0) -> None:
    """A store written by hand, as a user would: meta.json, index.parquet and one .npy per site."""
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    numeric = pd.Series(labels).map({name: k for k, name in enumerate(class_names)}).fillna(0).to_numpy(int)
    for k, site in enumerate(sites):
        values = rng.normal(size=(len(labels), 8)) + (3.0 - 1.5 * k) * numeric[:, None] * np.eye(1, 8)
        np.save(path / f"{site}.npy", values.astype(np.float32))
    index = pd.DataFrame({"row": np.arange(len(labels)), "id": [f"img{i}" for i in range(len(labels))],
                          "label": labels, "split": splits, **(index_extra or {})})
    index.to_parquet(path / "index.parquet", index=False)
    meta = {"format": 1, "num_samples": len(labels), "class_names": list(class_names), "fingerprint": "user",
            "rows_done": len(labels), "sites": {site: {"dim": 8, "dtype": "float32"} for site in sites}}
    (path / "meta.json").write_text(json.dumps(meta))


@pytest.fixture
def workdir(tmp_path):
    n = 90
    labels = np.where(np.arange(n) % 3 == 0, "malignant", "benign")
    splits = np.where(np.arange(n) % 4 == 0, "test", "train")
    _user_store(tmp_path / "features", labels, splits)  # string labels, no group column
    return tmp_path


def test_user_made_store_is_probed_with_notes(workdir):
    notes = []
    rows = run_probes(workdir, FAST, notes.append)
    assert set(rows.site) == set(SITES) and set(rows.kind) == {"ridge", "logistic"}
    assert any("no 'group' column" in note for note in notes)
    chosen = rows[rows.selected].set_index(["kind", "site"]).accuracy
    assert chosen[("logistic", "encoder.block1")] > 0.9 > chosen[("logistic", "head-features")]


def test_string_labels_outside_class_names_are_refused(tmp_path):
    _user_store(tmp_path / "features", np.array(["benign", "malign"] * 20), np.array(["train", "test"] * 20))
    with pytest.raises(FeatureError, match=r"labels \['malign'\] are not among meta.json's class_names"):
        run_probes(tmp_path, FAST)


def test_site_subsets_merge_and_settings_never_mix(workdir, capsys):
    assert main(["probe", str(workdir), "--sites", "encoder.*", *_cli(FAST_CLI)]) == 0
    first = pd.read_parquet(workdir / "probes.parquet")
    assert set(first.site) == {"encoder.block1", "encoder.block2"}
    assert main(["probe", str(workdir), "--sites", "head-*", *_cli(FAST_CLI)]) == 0
    merged = pd.read_parquet(workdir / "probes.parquet")
    assert set(merged.site) == set(SITES)
    pd.testing.assert_frame_equal(merged[merged.site != "head-features"].reset_index(drop=True),
                                  first.reset_index(drop=True))
    capsys.readouterr()
    assert main(["probe", str(workdir), "--sites", "head-*", *_cli([*FAST_CLI, "probe.folds=4"])]) == 2
    assert "made with other probe settings" in capsys.readouterr().err
    assert main(["probe", str(workdir), "--sites", "decoder.*"]) == 2
    assert "match no site" in capsys.readouterr().err
    assert pd.read_parquet(workdir / "probes.parquet").equals(merged)  # nothing lost by the refusals
    # --sites is a one-off selection: the work directory keeps probing every site, and its probes stay up to date
    recorded = json.loads((workdir / "manifest.json").read_text())
    assert list(recorded["config"]["probe"]["sites"]) == ["*"]
    subset = config_from_dict(recorded["config"])
    subset.probe.sites = ("head-*",)
    assert settings_hash(subset, "probe") == recorded["stages"]["probe"]["settings"]


def _cli(overrides):
    return [arg for override in overrides for arg in ("--set", override)]


def test_memory_budget_streams_chunks_with_identical_results(workdir):
    store = FeatureStore.open(workdir / "features")
    rows = store_io.store_rows(store, lambda _: None)
    tiny = store_io.site_bytes(len(rows.rows), 8) * 1.5 / 2**30  # room for one site at a time
    assert [task.sites for task in store_io.tasks(store, SITES, rows, tiny, 8)] == [[site] for site in SITES]
    whole = probe_store(store, FAST, SITES, lambda _: None)
    streamed = probe_store(store, dataclasses.replace(FAST, memory_gb=tiny), SITES, lambda _: None)
    keys = ["site", "kind", "lam", "fold", "split"]
    pd.testing.assert_frame_equal(streamed.sort_values(keys).reset_index(drop=True),
                                  whole.sort_values(keys).reset_index(drop=True), atol=1e-5)


def test_random_weights_baseline_columns(tmp_path, workdir):
    index = pd.read_parquet(workdir / "features" / "index.parquet")
    _user_store(tmp_path / "random", index.label.to_numpy(), index.split.to_numpy(), seed=5)
    for site in SITES:  # a random-weights model: no class signal in its features
        np.save(tmp_path / "random" / f"{site}.npy", np.random.default_rng(1).normal(size=(90, 8)).astype("f4"))
    rows = run_probes(workdir, dataclasses.replace(FAST, baseline_features=str(tmp_path / "random")))
    chosen = rows[rows.selected]
    assert chosen.baseline_accuracy.notna().all() and rows[~rows.selected].baseline_accuracy.isna().all()
    block1 = chosen[(chosen.site == "encoder.block1") & (chosen.kind == "logistic")].iloc[0]
    assert block1.over_baseline == pytest.approx(block1.accuracy - block1.baseline_accuracy)
    assert block1.over_baseline > 0.2
    _user_store(tmp_path / "other", index.label.to_numpy()[::-1], index.split.to_numpy())
    with pytest.raises(FeatureError, match="same rows"):
        run_probes(workdir, dataclasses.replace(FAST, baseline_features=str(tmp_path / "other")))


def test_demo_config_and_settings_defaults_agree():
    assert settings_from_config(load_config("demo").probe) == ProbeSettings()


@pytest.mark.parametrize(("override", "message"), [
    ("probe.folds=1", "probe.folds must be an integer >= 2"),
    ("probe.kinds=()", "probe.kinds must be distinct kinds"),
    ("probe.kinds=('ridge', 'svm')", "out of \\['ridge', 'logistic', 'mlp'\\]"),
    ("probe.ci_level=1.0", r"probe.ci_level must be a number in \(0, 1\)"),
    ("probe.ridge_lambdas=(1.0, -1.0)", "probe.ridge_lambdas must be one or more distinct numbers > 0"),
    ("probe.logistic_lambdas=()", "probe.logistic_lambdas must be one or more"),
    ("probe.max_iter=0", "probe.max_iter must be an integer >= 1"),
    ("probe.permutations=-1", "probe.permutations must be an integer >= 0"),
    ("probe.bootstrap=-5", "probe.bootstrap must be an integer >= 0"),
    ("probe.fold_scaling='patient'", r"probe.fold_scaling must be one of \['train', 'fold'\]"),
    ("probe.memory_gb=0.0", "probe.memory_gb must be a number > 0"),
    ("probe.tol=0.0", r"probe.tol must be a number in \(0, 1\)"),
    ("probe.sites=()", "probe.sites must be one or more site-name globs"),
])
def test_out_of_range_settings_are_refused_with_the_valid_range(override, message):
    """ProbeSettings' own checks (for probe sections that do not come through load_config, whose RULES refuse
    the same values first: tests/test_config.py)."""
    import ast

    key, value = override.removeprefix("probe.").split("=", 1)
    with pytest.raises(ConfigError, match=message):
        settings_from_config({**load_config("demo").probe, key: ast.literal_eval(value)})


def test_unknown_setting_is_refused():
    with pytest.raises(ConfigError, match="unknown probe settings \\['permutation'\\]; valid keys"):
        settings_from_config({"permutation": 10})
