"""Each builder on a fixture laid out like the public download: counts, exclusions, ids, groups, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxprobe import data
from jaxprobe.cli import main
from jaxprobe.data import samples, splits
from jaxprobe.data.medmnist import medmnist_layout
from jaxprobe.errors import DatasetError
from tests import data_fixtures as fx


def test_busi_counts_exclude_masks_and_list_corrupt(tmp_path):
    summary = data.build("busi", fx.make_busi(tmp_path / "manual"), tmp_path / "data")
    assert summary.counts == {"full": fx.BUSI_COUNTS}
    assert [item["id"] for item in summary.skipped] == ["benign/benign (99).png"]
    index = data.read_index(data.prepared_builder("busi", tmp_path / "data"))
    assert not index.id.str.contains("_mask").any()
    assert index.id.is_unique and summary.groups == len(index)


def test_busi_images_round_trip_as_rgb_at_original_size(tmp_path):
    manual = fx.make_busi(tmp_path / "manual", corrupt=False)
    data.build("busi", manual, tmp_path / "data")
    source = data.load("busi", "full", tmp_path / "data")
    record = source[0]
    original = samples.read_rgb(manual / "Dataset_BUSI_with_GT" / record["id"].decode())
    np.testing.assert_array_equal(record["image"], original)
    assert record["image"].dtype == np.uint8 and record["image"].shape[-1] == 3


def test_covid_ct_uses_official_split_lists(tmp_path):
    summary = data.build("covid19_ct", fx.make_covid_ct(tmp_path / "manual"), tmp_path / "data")
    expected = {split: {name: fx.COVID_SPLIT_COUNTS[name][split] for name in fx.COVID_SPLIT_COUNTS}
                for split in ("train", "val", "test")}
    assert summary.counts == expected
    assert summary.skipped == []


def test_covid_ct_without_lists_is_one_split(tmp_path):
    summary = data.build("covid19_ct", fx.make_covid_ct(tmp_path / "manual", with_lists=False), tmp_path / "data")
    assert summary.counts == {"full": {name: sum(v.values()) for name, v in fx.COVID_SPLIT_COUNTS.items()}}


def test_chest_xray_counts_patients_and_grouped_split(tmp_path):
    summary = data.build("chest_xray", fx.make_chest_xray(tmp_path / "manual"), tmp_path / "data")
    for (split, name), files in fx.CHEST_FILES.items():
        assert summary.counts[split][name] == len(files)
    index = data.read_index(data.prepared_builder("chest_xray", tmp_path / "data"))
    groups = dict(zip(index.id.str.split("/").str[-1], index.group, strict=True))
    assert groups["person1_bacteria_2.jpeg"] == groups["person1_bacteria_1.jpeg"] == "person1"
    assert groups["IM-0115-0002.jpeg"] == "IM-0115"
    assert groups["NORMAL2-IM-0771-0001.jpeg"] == "NORMAL2-IM-0771"
    assert summary.groups == index.group.nunique() < len(index)
    assignment = splits.make_split(index, "grouped", 0.2, 0.3, seed=0)
    seen = [set(index.group.iloc[rows]) for rows in assignment.values()]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert sum(len(rows) for rows in assignment.values()) == len(index)


@pytest.mark.parametrize(("flag", "size", "classes", "channels"), [("breastmnist", 28, 2, 1),
                                                                     ("pneumoniamnist", 64, 2, 1),
                                                                     ("bloodmnist", 28, 8, 3)])
def test_medmnist_npz(tmp_path, flag, size, classes, channels):
    fx.make_medmnist(tmp_path / "manual", flag, size, classes, channels)
    summary = data.build("medmnist", tmp_path / "manual", tmp_path / "data", config=f"{flag}_{size}")
    assert {split: sum(c.values()) for split, c in summary.counts.items()} == fx.MEDMNIST_SPLITS
    assert len(summary.class_names) == classes
    source = data.load("medmnist", "val", tmp_path / "data", config=f"{flag}_{size}")
    records = {record["id"].decode(): record for record in (source[i] for i in range(len(source)))}
    assert records["val/000001"]["image"].shape == (size, size, 3) and records["val/000001"]["label"] == 1


@pytest.mark.parametrize("with_splits", [False, True])
def test_image_folder_layouts_any_suffix_case(tmp_path, with_splits):
    root = fx.make_image_folder(tmp_path / "tree", with_splits)
    summary = data.build("image_folder", root, tmp_path / "data", config="tree")
    expected = {"cyst": 3, "solid": 4}
    assert summary.counts == ({"train": expected, "test": expected} if with_splits else {"full": expected})


def test_data_info_cli_prints_counts(tmp_path, capsys):
    data.build("busi", fx.make_busi(tmp_path / "manual"), tmp_path / "data")
    capsys.readouterr()  # drop what the build printed: --json output must be JSON alone
    assert main(["data", "info", "busi", "--data-dir", str(tmp_path / "data"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["full"] == fx.BUSI_COUNTS and printed["groups"] == 15 and len(printed["skipped"]) == 1
    assert main(["data", "info", "busi", "--data-dir", str(tmp_path / "data")]) == 0
    table = capsys.readouterr().out
    assert "malignant" in table and "benign/benign (99).png" in table


def test_interrupted_build_can_be_rerun(tmp_path, monkeypatch):
    manual = fx.make_busi(tmp_path / "manual", corrupt=False)
    calls = {"n": 0}
    real_read = samples.read_rgb

    def read_then_die(source):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C half-way
        return real_read(source)

    monkeypatch.setattr("jaxprobe.data.builders.read_rgb", read_then_die)
    with pytest.raises(KeyboardInterrupt):
        data.build("busi", manual, tmp_path / "data")
    monkeypatch.setattr("jaxprobe.data.builders.read_rgb", real_read)
    assert data.build("busi", manual, tmp_path / "data").counts == {"full": fx.BUSI_COUNTS}
    assert not list((tmp_path / "data" / "busi").glob("incomplete*"))


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("busi", lambda p: fx.make_chest_xray(p), "Dataset_BUSI_with_GT/<class>"),
        ("covid19_ct", lambda p: fx.make_busi(p), "Images-processed/CT_COVID"),
        ("chest_xray", lambda p: fx.make_covid_ct(p), "{train,test[,val]}/{NORMAL,PNEUMONIA}"),
        ("medmnist", lambda p: fx.make_busi(p), "expected pathmnist.npz"),
        ("image_folder", lambda p: fx.write_image(p / "stray.png", 0), "<root>/<class>/<image>"),
    ],
)
def test_wrong_layout_says_what_was_expected(tmp_path, name, make, message):
    make(tmp_path / "manual")
    with pytest.raises(DatasetError, match=message.replace("[", r"\[").replace("{", r"\{")):
        data.build(name, tmp_path / "manual", tmp_path / "data")


def test_missing_manual_dir_and_unknown_name(tmp_path, capsys):
    with pytest.raises(DatasetError, match="--manual-dir"):
        data.build("busi", None, tmp_path / "data")
    (tmp_path / "empty_manual").mkdir()
    with pytest.raises(DatasetError, match="missing or empty"):
        data.build("busi", tmp_path / "empty_manual", tmp_path / "data")
    assert main(["data", "build", "mnist", "--data-dir", str(tmp_path)]) == 2
    assert "unknown dataset 'mnist'; jaxprobe knows synthetic_lesions, busi" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="not built"):
        data.info("busi", tmp_path / "empty")


def test_empty_class_is_an_error(tmp_path):
    manual = fx.make_busi(tmp_path / "manual")
    for path in (manual / "Dataset_BUSI_with_GT" / "normal").iterdir():
        path.unlink()
    with pytest.raises(DatasetError, match="normal holds no images"):
        data.build("busi", manual, tmp_path / "data")


def test_medmnist_multilabel_flag_refused(tmp_path):
    with pytest.raises(DatasetError, match="multi-label"):
        medmnist_layout(tmp_path, "chestmnist", 28)
