"""``jaxprobe sweep``: cells run one after another, a failing cell is recorded and the rest go on, ``--cell``
picks one cell by number (scheduler arrays) or name, and a rerun resumes (finished cells are up to date)."""

from __future__ import annotations

import json

import pytest

from jaxprobe.cli import main
from jaxprobe.errors import ConfigError
from jaxprobe.sweep import cell_overrides, pick_cells, sweep_cells
from tests.test_end_to_end import FAST


@pytest.fixture()
def config_list(tmp_path):
    path = tmp_path / "mini_sweep.py"
    path.write_text("import ml_collections\n\ndef get_config():\n"
                    "    return ml_collections.ConfigDict({'cells': ['demo', 'medgemma_4b:busi']})\n")
    return str(path)


def test_cells_and_overrides(config_list):
    cells = sweep_cells(config_list)
    assert cells == ["demo", "study:medgemma_4b:busi"]
    assert pick_cells(cells, "1") == ["study:medgemma_4b:busi"] and pick_cells(cells, "medgemma_4b:busi") == cells[1:]
    with pytest.raises(ConfigError, match="0 to 1"):
        pick_cells(cells, "2")
    assert cell_overrides("study:lingshu_7b:busi", ["data.manual_dir=~/dl/{dataset}", "workdir=runs/{cell}"]) == [
        "data.manual_dir=~/dl/busi", "workdir=runs/lingshu_7b_busi"]
    assert len(sweep_cells("sweep")) == 51


def test_sweep_records_failures_and_goes_on(config_list, tmp_path, capsys):
    args = [arg for o in [*FAST, f"workdir={tmp_path}/{{cell}}", f"data.data_dir={tmp_path}/data"]
            for arg in ("--set", o)]
    assert main(["sweep", config_list, "--status-dir", str(tmp_path), *args]) == 1
    status = json.loads((tmp_path / "sweep_status.json").read_text())
    assert status["demo"]["status"] == "done" and (tmp_path / "demo" / "report.html").is_file()
    assert status["study:medgemma_4b:busi"]["status"] == "failed" and status["study:medgemma_4b:busi"]["error"]
    capsys.readouterr()
    assert main(["sweep", config_list, "--cell", "0", "--status-dir", str(tmp_path), *args]) == 0
    out = capsys.readouterr().out
    assert "probe: up to date" in out and "1 of 1 cells done" in out
    assert main(["sweep", config_list, "--cell", "7"]) == 2
