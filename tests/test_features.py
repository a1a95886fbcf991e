"""FeatureStore: numpy-readable layout, chunked resumable writes, refusal to mix configs, and `jaxprobe probe`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from jaxprobe.cli import main
from jaxprobe.errors import ConfigError, FeatureError
from jaxprobe.features import FeatureStore, FeatureStoreWriter


def _index(n: int = 60, classes: int = 2) -> pd.DataFrame:
    split = np.where(np.arange(n) % 4 == 0, "test", "train")
    return pd.DataFrame({"row": np.arange(n), "id": [f"img{i}" for i in range(n)], "label": np.arange(n) % classes,
                         "split": split, "group": [f"p{i // 2}" for i in range(n)]})


def _features(index: pd.DataFrame, rng) -> dict[str, np.ndarray]:
    labels = index.label.to_numpy()
    return {"vision.layer_00": (rng.normal(size=(len(index), 8)) + 2.0 * labels[:, None]).astype(np.float32),
            "llm.layer_00.last_token": rng.normal(size=(len(index), 16)).astype(np.float32)}


def _write(path, index, features, fingerprint="abc", stop_after=None, chunk=16):
    writer = FeatureStoreWriter(path, index, ["a", "b"], {k: v.shape[1] for k, v in features.items()}, fingerprint)
    for start in range(writer.rows_done, len(index), chunk):
        if stop_after is not None and start >= stop_after:
            return writer
        writer.write_chunk(start, {k: v[start:start + chunk] for k, v in features.items()})
    return writer


def test_store_is_plain_numpy_and_resumes_exactly(tmp_path):
    index, features = _index(), _features(_index(), np.random.default_rng(0))
    _write(tmp_path / "a", index, features, stop_after=32)  # killed after two chunks
    with pytest.raises(FeatureError, match="incomplete"):
        FeatureStore.open(tmp_path / "a")
    assert _write(tmp_path / "a", index, features).rows_done == len(index)  # rerun continues at row 32
    _write(tmp_path / "b", index, features)  # uninterrupted
    for site, values in features.items():
        resumed = np.load(tmp_path / "a" / f"{site}.npy")
        np.testing.assert_array_equal(resumed, np.load(tmp_path / "b" / f"{site}.npy"))
        np.testing.assert_array_equal(resumed, values)
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["sites"]["vision.layer_00"]["dim"] == 8
    store = FeatureStore.open(tmp_path / "a")
    assert store.sites_by_width() == {8: ["vision.layer_00"], 16: ["llm.layer_00.last_token"]}
    with pytest.raises(FeatureError, match="different widths cannot share a stack"):
        store.stack(store.sites)
    assert store.index.id.tolist() == index.id.tolist()


def test_store_refuses_another_config_and_nan(tmp_path):
    index, features = _index(), _features(_index(), np.random.default_rng(0))
    _write(tmp_path / "s", index, features, stop_after=16)
    with pytest.raises(ConfigError, match="another config"):
        _write(tmp_path / "s", index, features, fingerprint="other")
    features["vision.layer_00"][20, 1] = np.inf
    with pytest.raises(FeatureError, match=r"vision.layer_00 produced NaN/inf features for rows \[20\]"):
        _write(tmp_path / "s", index, features)


def test_probe_command_writes_parquet(tmp_path, capsys):
    index, features = _index(80), _features(_index(80), np.random.default_rng(1))
    _write(tmp_path / "features", index, features)
    overrides = ["probe.folds=3", "probe.permutations=4", "probe.bootstrap=50", "probe.kinds=('ridge',)",
                 "scoring.kind=ridge"]
    assert main(["probe", str(tmp_path), *[arg for o in overrides for arg in ("--set", o)]]) == 0
    rows = pd.read_parquet(tmp_path / "probes.parquet")
    chosen = rows[rows.selected].set_index("site")
    assert set(chosen.index) == set(features) and chosen.loc["vision.layer_00", "accuracy"] > 0.9
    assert chosen.loc["llm.layer_00.last_token", "accuracy"] < 0.8  # pure noise stays near chance
    assert "vision.layer_00" in capsys.readouterr().out


def test_feature_dtypes_round_trip_and_float16_overflow_is_refused(tmp_path):
    import ml_dtypes

    index = _index(20)
    values = {"vision.layer_00": np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)}
    for dtype in ("float16", "bfloat16"):
        writer = FeatureStoreWriter(tmp_path / dtype, index, ["a", "b"], {"vision.layer_00": 4}, "fp", dtype)
        writer.write_chunk(0, values)
        store = FeatureStore.open(tmp_path / dtype)
        stored = store.load("vision.layer_00")
        assert stored.dtype == (np.float16 if dtype == "float16" else ml_dtypes.bfloat16)
        np.testing.assert_array_equal(stored, values["vision.layer_00"].astype(stored.dtype))
        assert store.stack(["vision.layer_00"]).dtype == np.float32
    with pytest.raises(ConfigError, match="float32, float16, bfloat16"):
        FeatureStoreWriter(tmp_path / "int", index, ["a", "b"], {"vision.layer_00": 4}, "fp", "int8")
    big = {"vision.layer_00": values["vision.layer_00"].copy()}
    big["vision.layer_00"][[3, 7], 1] = 1e5
    writer = FeatureStoreWriter(tmp_path / "f16", index, ["a", "b"], {"vision.layer_00": 4}, "fp2", "float16")
    with pytest.raises(FeatureError, match=r"site vision.layer_00 has values up to 1e\+05 in rows \[3, 7\], beyond "
                                           r"float16's largest 6.55e\+04"):
        writer.write_chunk(0, big)
    assert writer.rows_done == 0


def test_damaged_store_files_are_one_line_errors(tmp_path, capsys):
    index, features = _index(), _features(_index(), np.random.default_rng(0))
    _write(tmp_path / "features", index, features)
    array_file = tmp_path / "features" / "vision.layer_00.npy"
    healthy = array_file.read_bytes()
    array_file.write_bytes(healthy[:-40])
    with pytest.raises(FeatureError, match=r"vision.layer_00.npy is damaged \(.*truncated\)"):
        FeatureStore.open(tmp_path / "features")
    assert main(["probe", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "truncated" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    array_file.write_bytes(b"garbage")
    with pytest.raises(FeatureError, match=r"vision.layer_00.npy is damaged \(unreadable .npy header"):
        FeatureStore.open(tmp_path / "features")
    array_file.unlink()
    with pytest.raises(FeatureError, match="the file is missing"):
        FeatureStore.open(tmp_path / "features")
    array_file.write_bytes(healthy)
    (tmp_path / "features" / "index.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(FeatureError, match=r"index.parquet is damaged \(not a readable parquet file"):
        FeatureStore.open(tmp_path / "features")
    (tmp_path / "features" / "meta.json").write_text("{\"format\": 1, ")
    with pytest.raises(FeatureError, match=r"meta.json is damaged \(not readable JSON"):
        FeatureStore.open(tmp_path / "features")


def test_resume_for_a_changed_dataset_is_refused_and_site_layout_is_kept(tmp_path):
    index, features = _index(), _features(_index(), np.random.default_rng(0))
    layout = {"vision_depth": 1, "llm_depth": 1, "connector_source": "vision.layer_00", "vision_pooling": "cls"}
    writer = FeatureStoreWriter(tmp_path / "s", index, ["a", "b"], {k: v.shape[1] for k, v in features.items()},
                                "abc", site_layout=layout)
    writer.write_chunk(0, {k: v[:16] for k, v in features.items()})
    changed = index.copy()
    changed.loc[5, "id"] = "img_new"  # an image replaced in the source folder
    with pytest.raises(FeatureError, match=r"other samples .*first at row 5: 'img5' in the store vs 'img_new'"):
        _write(tmp_path / "s", changed, features)
    resplit = index.assign(split="train")  # the split alone may change (it is not what the features depend on)
    _write(tmp_path / "s", resplit, features)
    assert FeatureStore.open(tmp_path / "s").site_layout == layout
    _write(tmp_path / "plain", index, features)
    assert FeatureStore.open(tmp_path / "plain").site_layout is None
