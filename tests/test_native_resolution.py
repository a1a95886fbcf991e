"""``capture.resolution="native"``: every image keeps its aspect ratio within the family's pixel budget, images
fall into a bounded number of size buckets (one compilation each), and a batch never mixes sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxprobe.capture import extract as extract_module
from jaxprobe.capture.images import bucket_size, check_resolution, target_sizes
from jaxprobe.config import load_config
from jaxprobe.errors import ConfigError
from jaxprobe.families.registry import family_by_name
from jaxprobe.features import FeatureStore
from tests.data_fixtures import write_image

SIZES = [(40, 90), (64, 64), (90, 40), (30, 30), (41, 88), (120, 100)]  # (height, width)
FAST = ["probe.folds=2", "probe.permutations=0", "probe.bootstrap=10", "capture.answer=scores",
        "capture.sites=('vision.layer_00', 'llm.layer_01.last_token')", "split.strategy=stratified",
        "split.val_fraction=0.0", "split.test_fraction=0.34"]


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    family = family_by_name("qwen_vl")
    return family.processor(family.tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), "qwen2_5_vl"))


def test_buckets_are_processor_fixed_points_within_budget(processor):
    low, high = processor.pixel_budget
    for height, width in SIZES:
        bucket = bucket_size(processor, height, width, step=1)
        assert processor.native_size(*bucket) == bucket
        assert bucket[0] % processor.size_unit == 0 and bucket[1] % processor.size_unit == 0
        assert low <= bucket[0] * bucket[1] <= high
        assert (bucket[0] > bucket[1]) == (height > width) or height == width  # orientation kept
    coarse = {bucket_size(processor, h, w, step=2) for h in range(20, 200, 7) for w in range(20, 200, 7)}
    fine = {bucket_size(processor, h, w, step=1) for h in range(20, 200, 7) for w in range(20, 200, 7)}
    cells = high // processor.size_unit**2  # image tokens the budget allows, in unit x unit cells
    bound = sum(cells // a for a in range(1, cells + 1))  # pairs (a, b) with a * b <= cells
    assert len(coarse) < len(fine) <= bound


def test_square_resolution_and_bad_values(processor):
    assert target_sizes(32, processor, np.array(SIZES), 1) == [(32, 32)] * len(SIZES)
    for bad in (0, -3, "big", 2.5, True):
        with pytest.raises(ConfigError, match=r"capture\.resolution"):
            check_resolution(bad, 1)
    with pytest.raises(ConfigError, match="bucket_step"):
        check_resolution("native", 0)


def test_native_extraction_buckets_rows_and_matches_per_image_runs(tmp_path):
    root = tmp_path / "tree"
    for k, size in enumerate(SIZES * 2):
        write_image(root / ("benign" if k % 2 else "malignant") / f"img{k:02d}.png", k, size=size, mode="RGB")
    overrides = [*FAST, "data.name=image_folder", "data.config=tree", f"data.manual_dir={root}",
                 f"workdir={tmp_path / 'run'}", "capture.resolution=native", "capture.bucket_step=1",
                 "capture.batch_size=3"]
    extract_module.run_extract(load_config("demo", overrides))
    store = FeatureStore.open(tmp_path / "run" / "features")
    buckets = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]["extract"]["size_buckets"]
    assert len(buckets) >= 3 and sum(buckets.values()) == len(SIZES) * 2
    # each image alone, squashed to its own bucket's square-free size, gives the same vector as in the batched run
    one = load_config("demo", [*overrides, f"workdir={tmp_path / 'single'}", "capture.batch_size=1"])
    extract_module.run_extract(one)
    single = FeatureStore.open(tmp_path / "single" / "features")
    assert (single.index.id.to_numpy() == store.index.id.to_numpy()).all()
    for site in store.sites:
        np.testing.assert_allclose(store.load(site), single.load(site), atol=1e-5)
