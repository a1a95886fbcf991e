"""The reference accuracy the visual-representation verdict holds the vision tower to.

A value in the config (``diagnosis.reference_accuracy``) wins; otherwise the work directory's
``vision_baseline.json`` (written by ``jaxprobe finetune``: the tower fine-tuned with a linear head on the same
train split, scored on test) supplies it; otherwise there is none and the verdict uses its configured minimum.
"""

from __future__ import annotations

import json
from pathlib import Path

from jaxprobe.errors import FeatureError
from jaxprobe.workdir import VISION_BASELINE_FILE


def reference_accuracy(workdir: str | Path, configured: float | None,
                       split: str) -> tuple[float | None, str | None]:
    """(accuracy, where it came from: "config", the baseline file's path, or None). ``split`` is the run's
    ``split_fingerprint``: a baseline trained and tested on another split is refused, not compared."""
    if configured is not None:
        return float(configured), "config"
    path = Path(workdir) / VISION_BASELINE_FILE
    if not path.is_file():
        return None, None
    try:
        record = json.loads(path.read_text())
        accuracy, made_on = record["accuracy"], record["split_fingerprint"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise FeatureError(f"{path} is damaged ({error!r}); rerun `jaxprobe finetune` or delete the file") from None
    if not isinstance(accuracy, int | float) or not 0 < accuracy <= 1:
        raise FeatureError(f"{path} gives accuracy {accuracy!r}, expected a number in (0, 1]; rerun `jaxprobe "
                           "finetune` or delete the file")
    if made_on != split:
        raise FeatureError(f"{path} was made on another train/val/test split than this run's features (split "
                           f"{made_on} vs {split}); rerun `jaxprobe finetune` with this config, or delete the file")
    return float(accuracy), str(path)
