"""Configs load from configs/, take typed --set overrides, and reject typos with the valid keys."""

from __future__ import annotations

import json

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
    assert len(cells) == 17 * 3 and "medgemma_4b:busi" in cells and "llava_med_v1_5_7b:busi" in cells
    with pytest.raises(ConfigError, match="unknown study cell"):
        load_config("study:nobody:busi")


def test_unsupported_family_stops_before_work(tmp_path):
    from jaxprobe.capture.extract import run_extract

    config = load_config("study:medgemma_4b:busi", [f"workdir={tmp_path}", "model.family=mamba_vl"])
    with pytest.raises(ConfigError, match="'mamba_vl' model, which jaxprobe does not implement yet"):
        run_extract(config)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("capture.batch_size=0", r"capture.batch_size=0: expected an integer >= 1"),
        ("capture.resolution=-3", r"capture.resolution=-3: expected an integer >= 1 \(pixels per side\) or 'native'"),
        ("capture.resolution=natve", r"capture.resolution='natve': expected an integer >= 1"),
        ("capture.bucket_step=0", r"capture.bucket_step=0: expected an integer >= 1"),
        ("workdir=''", r"workdir='': expected a non-empty directory path"),
        ("split.test_fraction=1.5", r"split.test_fraction=1.5: expected a number in \(0, 1\)"),
        ("split.val_fraction=0.8", r"val_fraction \+ split.test_fraction = 1 .*expected a sum < 1"),
        ("capture.feature_dtype=int8", r"capture.feature_dtype='int8': expected one of float32, float16, bfloat16"),
        ("capture.question='Which is it?'", r"capture.question=.*expected text containing \{options\}"),
        ("capture.question='{options} {other}'", r"capture.question=.*no other \{field\}"),
        ("capture.sites=()", r"capture.sites=\(\): expected a non-empty tuple"),
        ("data.name=nope", r"data.name='nope': expected a dataset jaxprobe knows"),
        ("scoring.kind=mlp", r"scoring.kind='mlp' is not among probe.kinds"),
        ("scoring.fhs_lambda=-1.0", r"scoring.fhs_lambda=-1.0: expected a number >= 0"),
        ("diagnosis.alpha=1.0", r"diagnosis.alpha=1.0: expected a significance level in \(0, 1\)"),
        ("diagnosis.min_test_images=0", r"diagnosis.min_test_images=0: expected an integer >= 1"),
        ("diagnosis.reference_accuracy=1.5", r"reference_accuracy=1.5: expected None or an accuracy in \(0, 1\]"),
        ("capture.generate.top_p=0.0", r"capture.generate.top_p=0.0: expected a number in \(0, 1\]"),
        ("capture.paraphrases=('Which?',)", r"capture.paraphrases=\('Which\?',\): expected a tuple of question"),
        ("mesh.model=0", r"mesh.model=0: expected an integer >= 1"),
        ("probe.fold_scaling=batch", r"probe.fold_scaling='batch': expected train .* or fold"),
        ("probe.memory_gb=0.0", r"probe.memory_gb=0.0: expected a number > 0"),
        ("probe.sites=()", r"probe.sites=\(\): expected a non-empty tuple of site globs"),
        ("probe.folds=1", r"probe.folds=1: expected an integer >= 2"),
    ],
)
def test_out_of_range_values_are_refused_up_front(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", [override])


def _user_config(tmp_path, body: str):
    path = tmp_path / "mine.py"
    path.write_text("from jaxprobe.config import load_config_file, find_config\n\n"
                    "def get_config():\n    config = load_config_file(find_config('demo'))\n"
                    f"    {body}\n    return config\n")
    return path


def test_user_config_with_a_typo_or_missing_key_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown keys \['capture.batchsize'\]; capture has \[.*batch_size"):
        load_config(_user_config(tmp_path, "config.capture.batchsize = 4"))
    with pytest.raises(ConfigError, match=r"capture.chunk_rows is missing: expected an integer >= 1"):
        load_config(_user_config(tmp_path, "del config.capture['chunk_rows']"))
    with pytest.raises(ConfigError, match=r"unknown keys \['capture.generate.topp'\]"):
        load_config(_user_config(tmp_path, "config.capture.generate.topp = 0.9"))
    with pytest.raises(ConfigError, match=r"section 'diagnosis' is missing"):
        load_config(_user_config(tmp_path, "del config['diagnosis']"))
    with pytest.raises(ConfigError, match=r"unknown keys \['probe.fold'\]; probe has \[.*'probe.folds'"):
        load_config(_user_config(tmp_path, "config.probe.fold = 3"))


def test_config_rebuilt_from_a_manifest_keeps_types_and_values():
    from jaxprobe.config import changed_keys, config_from_dict

    original = load_config("study:lingshu_7b:busi", ["probe.folds=3", "data.manual_dir=/data/busi"])
    recorded = json.loads(json.dumps(original.to_dict()))  # what manifest.json holds: tuples became lists
    rebuilt = config_from_dict(recorded)
    assert rebuilt.to_dict() == original.to_dict()
    assert isinstance(rebuilt.capture.sites, tuple) and rebuilt.model.checkpoint == "lingshu-medical-mllm/Lingshu-7B"
    assert changed_keys(rebuilt, recorded, ("data", "probe")) == []
    rebuilt.probe.folds = 4
    assert changed_keys(rebuilt, recorded, ("data", "probe")) == ["probe.folds"]
    with pytest.raises(TypeError):  # the base config's types survive the round trip (placeholders included)
        rebuilt.data.data_dir = 3
    older = json.loads(json.dumps(recorded))
    older["diagnosis"]["vision_min_accuracy"] = 0.75  # a key renamed since that manifest was written
    notes = []
    assert config_from_dict(older, notes.append).to_dict() == original.to_dict()
    assert notes == ["note: the recorded config's keys ['diagnosis.vision_min_accuracy'] are unknown to this jaxprobe "
                     "and were left out"]


def test_configs_ship_inside_the_wheel(tmp_path):
    """`pip install .` then `jaxprobe demo` outside the source tree: the wheel carries configs/ and finds it."""
    import importlib.util
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    checkout = Path(__file__).resolve().parents[1]
    root.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(checkout / name, root / name)
    for name in ("jaxprobe", "configs"):
        shutil.copytree(checkout / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", *isolation, "-w", str(tmp_path / "dist"), str(root)], check=True,
                   capture_output=True)
    wheel = next((tmp_path / "dist").glob("jaxprobe-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)], check=True,
                   capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = ("import jaxprobe.config as c\nprint(c.__file__)\nprint(c.find_config('demo'))\n"
              "print(c.load_config('study:lingshu_7b:busi').model.checkpoint)\nprint(len(c.load_config('sweep').cells))")
    result = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, capture_output=True, text=True,
                            env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    module, demo, checkpoint, cells = result.stdout.split()
    assert module.startswith(str(tmp_path / "site")) and demo == str(tmp_path / "site/jaxprobe/configs/demo.py")
    assert checkpoint == "lingshu-medical-mllm/Lingshu-7B" and cells == "51"
