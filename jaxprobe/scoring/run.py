"""``jaxprobe score WORKDIR``: probes.parquet + the feature index -> scores.json.

Scoring writes only its own output; the orchestrator (``jaxprobe.run``, the CLI) hands scores.json to the report.
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections
import pandas as pd

from jaxprobe.errors import FeatureError
from jaxprobe.features import FeatureStore
from jaxprobe.scoring.diagnosis import Thresholds
from jaxprobe.scoring.profile import score_run
from jaxprobe.workdir import FEATURES_DIR, PROBES_FILE, SCORES_FILE


def score_workdir(workdir: str | Path, config: ml_collections.ConfigDict) -> dict:
    """Score a work directory whose probes are done, write ``scores.json`` and return the scores."""
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
    scores["class_names"] = store.class_names
    (workdir / SCORES_FILE).write_text(json.dumps(scores, indent=1))
    return scores
