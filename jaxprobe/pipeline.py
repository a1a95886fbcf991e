"""Stages of a run, driven by a config; each reads only what the previous stage left on disk.

This module holds the first stage, ``prepare_data``: build the dataset and split it. Extraction lives in
``jaxprobe.capture.extract``, probing in ``jaxprobe.probes.run``, scoring in ``jaxprobe.scoring.run``, and
``jaxprobe.run`` chains them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import ml_collections
import numpy as np
import pandas as pd

from jaxprobe import data
from jaxprobe.data import splits
from jaxprobe.workdir import SPLIT_FILE


@dataclasses.dataclass(frozen=True)
class PreparedData:
    summary: data.DatasetSummary
    index: pd.DataFrame  # one row per sample: split (as built), id, label, group
    assignment: dict[str, np.ndarray]  # train/val/test -> row indices into ``index``


def data_dir_of(config: ml_collections.ConfigDict) -> Path:
    """``data.data_dir`` if set, else ``$JAXPROBE_DATA_DIR`` (as for `jaxprobe data build`), else <workdir>/datasets."""
    if config.data.data_dir:
        return Path(config.data.data_dir).expanduser()
    if os.environ.get(data.DATA_DIR_ENV):
        return data.default_data_dir()
    return Path(config.workdir) / "datasets"


def prepare_data(config: ml_collections.ConfigDict) -> PreparedData:
    """Build (or reuse) the dataset, split it as configured, and record the split in the work directory."""
    splits.check_strategy(config.split.strategy, config.split.val_fraction, config.split.test_fraction)
    summary = data.build(config.data.name, config.data.manual_dir, data_dir_of(config), config.data.config)
    index = data.read_index(data.prepared_builder(config.data.name, data_dir_of(config), config.data.config))
    assignment = splits.make_split(index, config.split.strategy, config.split.val_fraction,
                                   config.split.test_fraction, config.split.seed, summary.class_names)
    workdir = Path(config.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    record = {name: index.id.iloc[rows].tolist() for name, rows in assignment.items()}
    (workdir / SPLIT_FILE).write_text(json.dumps({"strategy": config.split.strategy, "ids": record}, indent=1))
    return PreparedData(summary, index, assignment)
