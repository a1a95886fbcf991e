"""From probe rows to the layer-wise curve of one probe kind, module by module.

Site names (DESIGN.md) carry the module: ``vision.layer_07``, ``connector.output``,
``llm.layer_12.image_mean``, ``llm.layer_12.last_token``; the zero-shot answer is the site ``answer``.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

MODULES = ("vision", "connector", "llm_image", "llm_last", "answer")
ANSWER_SITE = "answer"
_SITE = re.compile(r"^(?:vision\.layer_(?P<v>\d+)|connector\.output|llm\.layer_(?P<l>\d+)\.(?P<pool>image_mean|"
                   r"last_token)|answer)$")


def site_module(site: str) -> tuple[str, int]:
    """(module, layer index) of a site name; unknown names are an error, not a silently dropped point."""
    match = _SITE.match(site)
    if match is None:
        raise ValueError(f"site {site!r} does not follow the DESIGN.md naming (vision.layer_NN, connector.output, "
                         "llm.layer_NN.image_mean|last_token, answer)")
    if match.group("v") is not None:
        return "vision", int(match.group("v"))
    if match.group("l") is not None:
        return ("llm_image" if match.group("pool") == "image_mean" else "llm_last"), int(match.group("l"))
    return ("connector", 0) if site.startswith("connector") else (ANSWER_SITE, 0)


def selected_curve(probes: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Test accuracy (with CI and control) of each site's selected ``kind`` probe, in model order."""
    rows = probes[(probes["kind"] == kind) & probes["selected"]].copy()
    if rows.empty:
        raise ValueError(f"no selected {kind!r} probes; kinds present: {sorted(probes['kind'].unique())}")
    modules = rows["site"].map(site_module)
    rows["module"], rows["layer"] = modules.str[0], modules.str[1]
    rows["order"] = rows["module"].map(MODULES.index)
    keep = ["site", "module", "layer", "accuracy", "ci_low", "ci_high", "control_accuracy", "perm_p"]
    return rows.sort_values(["order", "layer"])[keep].reset_index(drop=True)


def module_curve(curve: pd.DataFrame, module: str) -> np.ndarray:
    return curve.loc[curve["module"] == module, "accuracy"].to_numpy()
