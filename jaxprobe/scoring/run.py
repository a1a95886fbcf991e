"""``jaxprobe score WORKDIR``: probes.parquet + the feature index -> scores.json.

Scoring writes only its own output; the orchestrator (``jaxprobe.run``, the CLI) hands scores.json to the report.
scores.json is strict JSON: a value that is not a number (NaN, inf: an AUROC over one class, a missing interval)
is written as ``null``, never as a bare ``NaN`` that other JSON readers refuse.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
import pandas as pd

from jaxprobe.errors import FeatureError
from jaxprobe.features import FeatureStore, split_fingerprint
from jaxprobe.scoring.diagnosis import Thresholds
from jaxprobe.scoring.profile import ScoreSettings, score_run
from jaxprobe.scoring.reference import reference_accuracy
from jaxprobe.workdir import FEATURES_DIR, PROBES_FILE, SCORES_FILE


def settings_from_config(config: ml_collections.ConfigDict) -> ScoreSettings:
    """The config's scoring, diagnosis and (for the answer's interval) probe sections as ``ScoreSettings``."""
    return ScoreSettings(config.scoring.kind, Thresholds(**config.diagnosis.to_dict()), config.scoring.fhs_lambda,
                         config.probe.bootstrap, config.probe.ci_level, config.probe.seed, config.probe.permutations)


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float (and numpy scalar) turned into plain JSON: NaN/inf become None."""
    if isinstance(value, dict):
        return {str(key): strict_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_scores(path: Path, scores: dict) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(strict_json(scores), indent=1, allow_nan=False))
    os.replace(temporary, path)


PROBE_COLUMNS = ("site", "kind", "selected", "accuracy", "ci_low", "ci_high", "control_accuracy", "perm_p")


def read_probes(path: Path) -> pd.DataFrame:
    """probes.parquet, or a one-line error when it is damaged or lacks the columns scoring reads."""
    try:
        probes = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for a damaged file; all mean the same here
        raise FeatureError(f"{path} is damaged ({type(error).__name__}: {error}); rerun `jaxprobe probe "
                           f"{path.parent}`") from error
    missing = [column for column in PROBE_COLUMNS if column not in probes]
    if missing:
        raise FeatureError(f"{path} lacks the columns {missing}; rerun `jaxprobe probe {path.parent}`")
    return probes


def score_workdir(workdir: str | Path, config: ml_collections.ConfigDict) -> dict:
    """Score a work directory whose probes are done, write ``scores.json`` and return the scores."""
    workdir = Path(workdir)
    if not (workdir / PROBES_FILE).is_file():
        raise FeatureError(f"{workdir / PROBES_FILE} is missing: run `jaxprobe probe {workdir}` first")
    store = FeatureStore.open(workdir / FEATURES_DIR)
    reference, source = reference_accuracy(workdir, config.diagnosis.reference_accuracy,
                                           split_fingerprint(store.index))
    settings = settings_from_config(config)
    settings = dataclasses.replace(settings, thresholds=dataclasses.replace(settings.thresholds,
                                                                            reference_accuracy=reference))
    scores = score_run(read_probes(workdir / PROBES_FILE), store.index, settings, store.class_names,
                       store.site_layout)
    scores["reference"] = {"accuracy": reference, "source": source}
    write_scores(workdir / SCORES_FILE, scores)
    return json.loads((workdir / SCORES_FILE).read_text())
