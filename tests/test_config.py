"""Configs load from configs/, take typed --set overrides, and reject typos with the valid keys."""

from __future__ import annotations

import pytest

from jaxprobe.config import load_config
from jaxprobe.errors import ConfigError


def test_demo_config_loads_with_overrides():
    config = load_config("demo", ["split.seed=7", "split.test_fraction=0.25", "data.config=default"])
    assert config.split.seed == 7 and config.split.test_fraction == 0.25 and config.data.config == "default"


def test_config_by_path(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("import ml_collections\n\ndef get_config():\n    return ml_collections.ConfigDict({'a': 1})\n")
    assert load_config(path, ["a=2"]).a == 2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("split.sead=1", "no key 'sead'"),
        ("splits.seed=1", "'splits' is not a section"),
        ("split.seed=abc", "split.seed=abc"),
        ("split.seed", "key.path=value"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", [override])


def test_unknown_or_broken_config(tmp_path):
    with pytest.raises(ConfigError, match=r"available: .*demo"):
        load_config("nope")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match="boom"):
        load_config(broken)


def test_study_cells_and_sweep():
    config = load_config("study:lingshu_7b:covid19_ct")
    assert config.model.checkpoint == "lingshu-medical-mllm/Lingshu-7B" and config.data.name == "covid19_ct"
    assert config.model.family == "qwen2_5_vl" and config.workdir == "runs/lingshu_7b/covid19_ct"
    cells = load_config("sweep").cells
    assert len(cells) == 16 * 3 and "medgemma_4b:busi" in cells
    with pytest.raises(ConfigError, match="unknown study cell"):
        load_config("study:nobody:busi")


def test_unsupported_family_stops_before_work(tmp_path):
    from jaxprobe.capture.extract import run_extract

    config = load_config("study:medgemma_4b:busi", [f"workdir={tmp_path}"])
    with pytest.raises(ConfigError, match="'gemma3' model, which jaxprobe does not implement yet"):
        run_extract(config)
    assert not any(tmp_path.iterdir())
