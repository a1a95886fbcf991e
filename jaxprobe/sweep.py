"""``jaxprobe sweep CONFIG_LIST``: many study cells, one after another (resuming) or one per scheduler job.

A config list is a config whose ``cells`` are config names (``configs/sweep.py``: every ``study:<model>:<dataset>``
cell). Each cell runs as ``jaxprobe run`` would, so finished stages are skipped and interrupted ones resume; a
cell that fails (an offline checkpoint, a missing download) is recorded with its one-line error and the sweep goes
on. ``--cell K`` runs only the K-th cell (0-based, e.g. ``--cell $SLURM_ARRAY_TASK_ID`` with ``--array=0-47``) or the
cell of that name. Overrides apply to every cell after ``{model}``, ``{dataset}`` and ``{cell}`` are filled in,
e.g. ``--set data.manual_dir=~/downloads/{dataset}``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from jaxprobe.config import load_config
from jaxprobe.errors import ConfigError, JaxprobeError
from jaxprobe.parallel import is_primary

STATUS_FILE = "sweep_status.json"


def sweep_cells(config_list: str) -> list[str]:
    """The cells a config list names (a config whose ``cells`` are config names or ``model:dataset`` pairs)."""
    listing = load_config(config_list)
    if "cells" not in listing or not listing.cells:
        raise ConfigError(f"config {config_list!r} lists no cells: a sweep config's get_config() returns "
                          "ConfigDict(cells=[...])")
    return [cell if cell.startswith("study:") or ":" not in cell else f"study:{cell}" for cell in listing.cells]


def pick_cells(cells: Sequence[str], cell: str | None) -> list[str]:
    """All cells, or the one ``--cell`` names by index or by name."""
    if cell is None:
        return list(cells)
    if cell.isdigit():
        if int(cell) >= len(cells):
            raise ConfigError(f"--cell {cell}: the sweep has {len(cells)} cells (0 to {len(cells) - 1})")
        return [cells[int(cell)]]
    matches = [name for name in cells if name == cell or name.removeprefix("study:") == cell]
    if not matches:
        raise ConfigError(f"--cell {cell!r} is not in the sweep; e.g. {', '.join(cells[:3])}")
    return matches


def cell_overrides(cell: str, overrides: Sequence[str]) -> list[str]:
    """``--set`` values with ``{model}``, ``{dataset}`` and ``{cell}`` filled in for one cell."""
    model, _, dataset = cell.removeprefix("study:").partition(":")
    fields = {"model": model, "dataset": dataset, "cell": cell.removeprefix("study:").replace(":", "_")}
    try:
        return [override.format(**fields) for override in overrides]
    except (KeyError, IndexError, ValueError) as error:
        raise ConfigError(f"--set {overrides}: only {{model}}, {{dataset}} and {{cell}} can be filled in "
                          f"({error})") from error


def _record(status_path: Path, cell: str, entry: dict) -> None:
    status = json.loads(status_path.read_text()) if status_path.is_file() else {}
    status[cell] = entry
    temporary = status_path.with_suffix(".tmp")
    temporary.write_text(json.dumps(status, indent=1))
    os.replace(temporary, status_path)


def run_sweep(config_list: str, overrides: Sequence[str], cell: str | None, status_dir: str | Path,
              run: Callable, log: Callable[[str], None] = print) -> dict[str, dict]:
    """Run the chosen cells with ``run(config)``; returns {cell: {"status", "seconds", "error"/"report"}}."""
    status_path = Path(status_dir) / STATUS_FILE
    status_path.parent.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in pick_cells(sweep_cells(config_list), cell):
        started = time.perf_counter()
        try:
            report = run(load_config(name, cell_overrides(name, overrides)))
            entry = {"status": "done", "report": str(report)}
        except JaxprobeError as error:  # one cell's bad input must not stop the others
            entry = {"status": "failed", "error": str(error)}
        entry["seconds"] = round(time.perf_counter() - started, 1)
        log(f"{name}: {entry['status']}" + (f": {entry['error']}" if "error" in entry else ""))
        if is_primary():
            _record(status_path, name, entry)
        results[name] = entry
    return results
