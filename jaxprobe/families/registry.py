"""model_type -> Family: the one list of supported families (CLI, configs, errors and tests read it here)."""

from __future__ import annotations

from pathlib import Path

from jaxprobe.errors import ConfigError
from jaxprobe.families.base import Family
from jaxprobe.families.gemma3 import Gemma3Family
from jaxprobe.families.hulumed import HuluMedFamily
from jaxprobe.families.llava import LlavaFamily
from jaxprobe.families.qwen_vl import QwenVLFamily
from jaxprobe.weights.reader import read_config_json

FAMILIES: tuple[Family, ...] = (QwenVLFamily(), HuluMedFamily(), Gemma3Family(), LlavaFamily())


def supported_model_types() -> list[str]:
    return [model_type for family in FAMILIES for model_type in family.model_types]


def family_for_model_type(model_type: str | None) -> Family:
    """The family claiming ``model_type``, or a ``ConfigError`` saying why not (a family may refuse a related
    model_type with a reason, e.g. a text-only variant) or listing what is supported."""
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
        reason = getattr(family, "refused_model_types", {}).get(model_type)
        if reason:
            raise ConfigError(f"model_type {model_type!r}: {reason}")
    raise ConfigError(f"model_type {model_type!r} is not supported; jaxprobe supports "
                      f"{', '.join(supported_model_types())}")


def family_by_name(name: str) -> Family:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise ConfigError(f"no model family {name!r}; families: {', '.join(f.name for f in FAMILIES)}")


def family_of(checkpoint_dir: str | Path) -> Family:
    """The family of a checkpoint directory, from its config.json's ``model_type``."""
    return family_for_model_type(read_config_json(checkpoint_dir).get("model_type"))


def models_table() -> list[dict]:
    """For ``jaxprobe models``: each family, the model_types it claims and the study models (configs/study.py)
    it covers."""
    from jaxprobe.config import load_study_models

    study = load_study_models()
    return [{"family": family.name, "model_types": list(family.model_types),
             "study_models": [name for name, (_, model_type) in study.items() if model_type in family.model_types]}
            for family in FAMILIES]
