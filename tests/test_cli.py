"""The command line: the demo runs end to end, errors are one clean line, --help lists only working commands."""

from __future__ import annotations

import pytest

from jaxprobe.cli import build_parser, main


def test_errors_are_one_line_without_traceback(tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path), "--set", "split.strategy=random"]) == 2
    err = capsys.readouterr().err  # refused before the dataset is built: nothing else printed
    assert err.startswith("jaxprobe: error: invalid config: split.strategy='random': expected one of stratified")
    assert "Traceback" not in err


def test_help_lists_only_existing_commands():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == {"data", "demo", "run", "extract", "probe", "score", "compare", "tiny-checkpoint",
                             "convert", "parity", "models", "sweep", "finetune"}
    with pytest.raises(SystemExit):
        parser.parse_args(["extract"])


def test_checkpoint_commands(tmp_path, capsys):
    assert main(["tiny-checkpoint", "qwen2_5_vl", "--out", str(tmp_path / "ckpt")]) == 0
    assert main(["convert", str(tmp_path / "ckpt"), "--out", str(tmp_path / "cache")]) == 0
    assert main(["convert", str(tmp_path / "ckpt"), "--out", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "converted:" in out and "cache hit:" in out
    assert main(["parity", str(tmp_path / "ckpt")]) == 0
    assert "PASS at atol 0.0001" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "nowhere"), "--out", str(tmp_path / "cache")]) == 2
    assert "jaxprobe: error:" in capsys.readouterr().err


def test_models_lists_families_and_the_study_models_they_cover(capsys):
    import json

    assert main(["models", "--json"]) == 0
    table = {entry["family"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert table["qwen_vl"]["model_types"] == ["qwen2_vl", "qwen2_5_vl"]
    assert {"medvlm_r1_2b", "lingshu_7b", "lingshu_32b", "qwen25_vl_7b"} <= set(table["qwen_vl"]["study_models"])
    assert "medgemma_4b" not in table["qwen_vl"]["study_models"]


def test_parity_on_a_missing_directory_is_one_quick_line(tmp_path, capsys):
    import time

    started = time.perf_counter()
    assert main(["parity", str(tmp_path / "nowhere")]) == 2
    assert time.perf_counter() - started < 5  # no hub retries
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a checkpoint directory" in err
