"""Data that would otherwise be silently wrong: changed downloads, deep images, patient folders, giant images."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from jaxprobe import data
from jaxprobe.cli import main
from jaxprobe.config import load_config
from jaxprobe.data import samples, splits
from jaxprobe.errors import DatasetError
from jaxprobe.pipeline import prepare_data
from tests import data_fixtures as fx


def _ids(data_dir, config="tree"):
    return sorted(data.read_index(data.prepared_builder("image_folder", data_dir, config)).id)


def test_changed_download_is_refused_then_rebuilt_on_request(tmp_path, capsys):
    """Item 1: images added, removed or edited after a build must not be served from the old build."""
    root = fx.make_image_folder(tmp_path / "tree", with_splits=False)
    data_dir = tmp_path / "data"
    data.build("image_folder", root, data_dir, config="tree")
    fx.write_image(root / "cyst" / "added.png", 1)
    with pytest.raises(DatasetError, match=r"differ: 1 added \(cyst/added.png\).*--rebuild"):
        data.build("image_folder", root, data_dir, config="tree")
    (root / "cyst" / "added.png").unlink()
    data.build("image_folder", root, data_dir, config="tree")  # back as built: reused
    edited = root / "solid" / "img1.JPG"
    os.utime(edited, ns=(1, 1))  # a touch (or a copy) without a content change is not a change
    data.build("image_folder", root, data_dir, config="tree")
    fx.write_image(edited, seed=12345, mode="RGB")
    (root / "cyst" / "img0.png").unlink()
    with pytest.raises(DatasetError, match=r"1 removed \(cyst/img0.png\); 1 changed \(solid/img1.JPG\)"):
        data.build("image_folder", root, data_dir, config="tree")
    assert main(["data", "build", "image_folder", "--config", "tree", "--manual-dir", str(root), "--data-dir",
                 str(data_dir), "--rebuild"]) == 0
    assert "cyst/img0.png" not in _ids(data_dir) and len(_ids(data_dir)) == 6
    edited_record = next(r for r in data.load("image_folder", "full", data_dir, "tree") if r["id"] == b"solid/img1.JPG")
    np.testing.assert_array_equal(edited_record["image"], samples.read_rgb(edited))


def test_another_folder_under_the_same_config_is_refused_unless_identical(tmp_path):
    root = fx.make_image_folder(tmp_path / "tree", with_splits=False)
    data.build("image_folder", root, tmp_path / "data", config="tree")
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)  # new mtimes, same content: the same dataset
    assert data.build("image_folder", copy, tmp_path / "data", config="tree").counts["full"] == {"cyst": 3, "solid": 4}
    other = fx.make_image_folder(tmp_path / "other", with_splits=False)
    fx.write_image(other / "solid" / "img0.png", 777, mode="RGB")
    with pytest.raises(DatasetError, match=r"built from .*tree, but the source files in .*other differ: 1 changed"):
        data.build("image_folder", other, tmp_path / "data", config="tree")


def test_run_refuses_a_changed_download_too(tmp_path):
    root = fx.make_image_folder(tmp_path / "tree", with_splits=False)
    config = load_config("demo", [f"workdir={tmp_path / 'run'}", "data.name=image_folder", "data.config=tree",
                                  f"data.manual_dir={root}", "split.strategy=stratified", "split.val_fraction=0.0",
                                  "split.test_fraction=0.3"])
    prepare_data(config)
    fx.write_image(root / "solid" / "new.png", 3)
    with pytest.raises(DatasetError, match=r"1 added \(solid/new.png\)"):
        prepare_data(config)


def _gradient(dtype, low, high) -> np.ndarray:
    return np.linspace(low, high, 20 * 24).reshape(20, 24).astype(dtype)


@pytest.mark.parametrize("mode", Image.MODES)
def test_every_pillow_mode_is_converted_or_refused(mode):
    """Item 3: each mode Pillow can return becomes uint8 RGB by a stated rule, or is refused (then skipped)."""
    if mode in samples.HIGH_DEPTH_MODES:
        dtype = {"F": "<f4", "I": "<i4", "I;16B": ">u2", "I;16N": "=u2"}.get(mode, "<u2")
        image = Image.frombytes(mode, (24, 20), _gradient(dtype, 1000, 4000).tobytes())
        rgb = samples.to_rgb(image)
        assert rgb.dtype == np.uint8 and rgb.shape == (20, 24, 3)
        assert rgb.min() == 0 and rgb.max() == 255  # min-max per image: the full 8-bit range, not clipped white
        assert np.all(np.diff(rgb[..., 0].ravel().astype(int)) >= 0)  # the gradient keeps its order
    elif mode in samples.EIGHT_BIT_MODES:
        rgb = samples.to_rgb(Image.new(mode, (24, 20)))
        assert rgb.dtype == np.uint8 and rgb.shape == (20, 24, 3)
    else:
        with pytest.raises(samples.UnreadableImageError, match=f"mode {mode!r} has no conversion rule"):
            samples.to_rgb(Image.new(mode, (24, 20)))


def test_sixteen_bit_and_float_files_keep_their_contrast(tmp_path):
    root = tmp_path / "tree"
    twelve_bit = _gradient(np.uint16, 0, 4095)  # 12-bit data in a 16-bit PNG, as CT/X-ray exports often are
    for name in ("a", "b"):
        (root / "xray" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(twelve_bit).save(root / "xray" / f"{name}.png")
        (root / "ct").mkdir(exist_ok=True)
        Image.fromarray(_gradient(np.float32, -1000.0, 3000.0)).save(root / "ct" / f"{name}.tif")
    broken = _gradient(np.float32, 0, 1)
    broken[3, 3] = np.nan
    Image.fromarray(broken).save(root / "ct" / "nan.tif")
    summary = data.build("image_folder", root, tmp_path / "data", config="deep")
    assert [item["id"] for item in summary.skipped] == ["ct/nan.tif"]
    assert "NaN" in summary.skipped[0]["reason"]
    for record in data.load("image_folder", "full", tmp_path / "data", "deep"):
        image = record["image"]
        assert image.min() == 0 and image.max() == 255 and 100 < image.mean() < 155, record["id"]


@pytest.mark.parametrize("limit", [1000, 600])  # a 1600-pixel image: over the warning limit, and over twice it
def test_images_over_the_pixel_limit_are_skipped_and_listed(tmp_path, monkeypatch, limit):
    root = fx.make_image_folder(tmp_path / "tree", with_splits=False)  # 480-pixel images
    fx.write_image(root / "cyst" / "huge.png", 5, size=(40, 40))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    summary = data.build("image_folder", root, tmp_path / "data", config="tree")
    assert [item["id"] for item in summary.skipped] == ["cyst/huge.png"]
    assert "more pixels than Pillow's limit of" in summary.skipped[0]["reason"]
    assert summary.counts == {"full": {"cyst": 3, "solid": 4}}


def test_image_folder_with_patient_folders_and_known_split_names(tmp_path):
    """Item 4: root/<class>/<patient>/* is class + patient, never split + class."""
    root = tmp_path / "tree"
    for label, patients in {"benign": ["p1", "p2"], "malignant": ["p3", "p4", "p5"]}.items():
        for k, patient in enumerate(patients):
            for i in range(2):
                fx.write_image(root / label / patient / f"scan{i}.png", 10 * k + i)
    fx.write_image(root / "malignant" / "p5" / "followup" / "scan9.png", 99)  # deeper folders: same patient
    summary = data.build("image_folder", root, tmp_path / "data", config="patients")
    assert summary.class_names == ["benign", "malignant"]
    assert summary.counts == {"full": {"benign": 4, "malignant": 7}} and summary.groups == 5
    index = data.read_index(data.prepared_builder("image_folder", tmp_path / "data", "patients"))
    assert index.set_index("id").loc["malignant/p5/followup/scan9.png", "group"] == "p5"

    split_root = tmp_path / "splits"
    for split in ("Train", "validation", "test"):
        for label in ("a", "b"):
            fx.write_image(split_root / split / label / "p1" / "x.png", 1)
            fx.write_image(split_root / split / label / "p2" / "y.png", 2)
    summary = data.build("image_folder", split_root, tmp_path / "data", config="splits")
    assert set(summary.counts) == {"train", "val", "test"} and summary.counts["val"] == {"a": 2, "b": 2}


def test_ambiguous_image_folders_say_what_was_detected(tmp_path):
    mixed = tmp_path / "mixed"
    fx.write_image(mixed / "train" / "a" / "x.png", 1)
    fx.write_image(mixed / "cats" / "y.png", 2)
    with pytest.raises(DatasetError, match=r"mixes split folders \['train'\] with other folders \['cats'\]"):
        data.build("image_folder", mixed, tmp_path / "data", config="mixed")
    loose = tmp_path / "loose"
    fx.write_image(loose / "a" / "p1" / "x.png", 1)
    fx.write_image(loose / "a" / "y.png", 2)
    fx.write_image(loose / "b" / "z.png", 3)
    with pytest.raises(DatasetError, match=r"detected layout <root>/<class>/<patient>/<image>.*move y.png"):
        data.build("image_folder", loose, tmp_path / "data", config="loose")


def test_classes_too_small_for_the_split_are_named_with_what_works():
    labels = np.array([0] * 10 + [1] * 10 + [2] * 2)
    groups = np.array([f"p{i}" for i in range(22)])
    index = {"label": labels, "group": groups, "split": ["full"] * 22}
    import pandas as pd

    frame = pd.DataFrame(index)
    names = ["normal", "benign", "malignant"]
    with pytest.raises(DatasetError, match=r"'malignant' has 2 patients \(groups\); each class needs at least 3 "
                                           r"patients \(groups\), one per split: set split.val_fraction=0"):
        splits.make_split(frame, "grouped", 0.1, 0.2, 0, names)
    with pytest.raises(DatasetError, match=r"split.test_fraction=0.05 holds out 2 of 22 images for 3 classes.*use "
                                           r"split.test_fraction between 0.136 and 0.864"):
        splits.make_split(frame, "stratified", 0.0, 0.05, 0, names)
    with pytest.raises(DatasetError, match=r"needs at least 50 patient groups, but there are 22"):
        splits.make_split(frame, "grouped", 0.0, 0.02, 0, names)


def test_run_honours_the_data_dir_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "shared_datasets"))
    config = load_config("demo", [f"workdir={tmp_path / 'run'}"])
    prepare_data(config)
    assert (tmp_path / "shared_datasets" / "synthetic_lesions").is_dir()
    assert not (tmp_path / "run" / "datasets").exists()


def test_a_class_too_rare_for_the_probe_folds_says_which_setting_works():
    from jaxprobe.stats.folds import kfold

    labels = np.array([0] * 10 + [1] * 3)
    with pytest.raises(DatasetError, match=r"classes \{1: 3\} .*fewer than 5 samples .*set probe.folds=3 or fewer"):
        kfold(labels, 5, seed=0)


def test_builds_into_one_data_dir_take_turns(tmp_path, capsys):
    """Two runs sharing $JAXPROBE_DATA_DIR: the second build waits for the first instead of deleting its files."""
    import subprocess
    import sys

    data_dir = tmp_path / "shared"
    holder = subprocess.Popen([sys.executable, "-c", "import time\nfrom jaxprobe.workdir import directory_lock\n"
                               f"with directory_lock({str(data_dir)!r}, 'data build busi'):\n"
                               "    print('locked', flush=True)\n    time.sleep(1.5)\n"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    summary = data.build("image_folder", fx.make_image_folder(tmp_path / "tree", False), data_dir, config="tree")
    assert holder.wait() == 0 and summary.counts == {"full": {"cyst": 3, "solid": 4}}
    holder.stdout.close()
    waited = f"waiting for another jaxprobe process to finish with {data_dir} (pid {holder.pid}"
    assert waited in capsys.readouterr().out
