"""From probe rows to the layer-wise curve of one probe kind, module by module.

Site names (DESIGN.md) carry the module: ``vision.layer_07``, ``connector.output``,
``llm.layer_12.image_mean``, ``llm.layer_12.last_token``; the zero-shot answer is the site ``answer`` (option
scores) and, when the model's reply was generated, ``answer.generated``. A store
may hold only some modules (``capture.sites`` globs) or sites named otherwise (a user-made store): the curve
keeps what it can place and says what it could not, so scoring reports the modules that are there. A tower with
a CLS token also has ``vision.layer_07.cls`` sites (module ``vision_cls``): probed, but the vision curve is the
patch means, as for every other tower.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from jaxprobe.errors import ConfigError

MODULES = ("vision", "connector", "llm_image", "llm_last", "answer")
MODULE_NAMES = {"vision": "vision tower", "connector": "connector", "llm_image": "LLM image-token mean",
                "llm_last": "LLM last prompt token", "answer": "zero-shot answer"}
ANSWER_SITE = "answer"  # the option-score answer
GENERATED_SITE = "answer.generated"  # the parsed generated reply (the study's P_final)
CURVE_COLUMNS = ("site", "module", "layer", "accuracy", "ci_low", "ci_high", "control_accuracy", "perm_p")
EXTRA_METRICS = ("balanced_accuracy", "auroc", "macro_f1")  # carried into the curve when the probes have them
_SITE = re.compile(r"^(?:vision\.layer_(?P<v>\d+)(?P<cls>\.cls)?|connector\.output|"
                   r"llm\.layer_(?P<l>\d+)\.(?P<pool>image_mean|last_token)|answer(?P<generated>\.generated)?)$")


def site_module(site: str) -> tuple[str, int]:
    """(module, layer index) of a site name; a name outside the DESIGN.md naming is a ``ValueError``."""
    match = _SITE.match(site)
    if match is None:
        raise ValueError(f"site {site!r} does not follow the DESIGN.md naming (vision.layer_NN, connector.output, "
                         "llm.layer_NN.image_mean|last_token, answer)")
    if match.group("v") is not None:
        return ("vision_cls" if match.group("cls") else "vision"), int(match.group("v"))
    if match.group("l") is not None:
        return ("llm_image" if match.group("pool") == "image_mean" else "llm_last"), int(match.group("l"))
    if site.startswith("connector"):
        return "connector", 0
    return ANSWER_SITE, 1 if match.group("generated") else 0


def placeable(site: str) -> bool:
    return _SITE.match(site) is not None


def check_kind(probes: pd.DataFrame, kind: str) -> None:
    """``scoring.kind`` must name a kind that was fitted and selected."""
    fitted = sorted(probes.loc[probes["selected"].astype(bool) & probes["kind"].notna(), "kind"].unique())
    if kind not in fitted:
        raise ConfigError(f"scoring.kind={kind!r}, but probes.parquet holds selected probes of kinds {fitted}: set "
                          f"scoring.kind to one of them, or add {kind!r} to probe.kinds and rerun `jaxprobe probe`")


def selected_curve(probes: pd.DataFrame, kind: str) -> tuple[pd.DataFrame, list[str]]:
    """Test accuracy (with CI, control and other metrics) of each site's selected ``kind`` probe, in model order,
    and the sites whose names could not be placed in a module (left out of the curve). ``check_kind`` first."""
    rows = probes[(probes["kind"] == kind) & probes["selected"].astype(bool)].copy()
    unplaced = sorted(site for site in rows["site"].unique() if not placeable(site))
    rows = rows[rows["site"].map(placeable)]
    modules = rows["site"].map(site_module)
    rows["module"], rows["layer"] = modules.str[0], modules.str[1]
    rows = rows[rows["module"].isin(MODULES)]  # vision_cls: probed, not on the curve
    rows["order"] = rows["module"].map(MODULES.index)
    extra = [c for c in rows.columns if c in EXTRA_METRICS or c.startswith("recall_")]
    keep = [*CURVE_COLUMNS, *extra]
    for column in keep:
        if column not in rows:
            rows[column] = np.nan
    return rows.sort_values(["order", "layer"])[keep].reset_index(drop=True), unplaced


def module_curve(curve: pd.DataFrame, module: str) -> np.ndarray:
    return curve.loc[curve["module"] == module, "accuracy"].to_numpy()


def missing_modules(curve: pd.DataFrame) -> list[str]:
    present = set(curve["module"])
    return [module for module in MODULES if module not in present]
