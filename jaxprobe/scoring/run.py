"""``jaxprobe score WORKDIR``: probes.parquet + the feature index -> scores.json and the report."""

from __future__ import annotations

from pathlib import Path

import ml_collections
import pandas as pd

from jaxprobe.errors import FeatureError
from jaxprobe.features import FEATURES_DIR, FeatureStore
from jaxprobe.probes.run import PROBES_FILE
from jaxprobe.report.write import write_report
from jaxprobe.scoring.diagnosis import Thresholds
from jaxprobe.scoring.profile import score_run


def score_workdir(workdir: str | Path, config: ml_collections.ConfigDict, name: str | None = None) -> Path:
    """Score a work directory whose probes are done; returns the report's path."""
    workdir = Path(workdir)
    if not (workdir / PROBES_FILE).is_file():
        raise FeatureError(f"{workdir / PROBES_FILE} is missing: run `jaxprobe probe {workdir}` first")
    store = FeatureStore.open(workdir / FEATURES_DIR)
    if "answer_pred" not in store.index:
        raise FeatureError(f"the feature index in {store.path} has no zero-shot answers (answer_pred); "
                           "re-run `jaxprobe extract` with answers enabled")
    scores = score_run(pd.read_parquet(workdir / PROBES_FILE), store.index, config.scoring.kind,
                       Thresholds(**config.diagnosis.to_dict()), config.scoring.fhs_lambda,
                       config.probe.bootstrap, config.probe.ci_level, config.probe.seed)
    return write_report(workdir, name or workdir.name, scores, len(store.class_names))
