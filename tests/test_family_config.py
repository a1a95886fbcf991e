"""Config translation accounts for every attribute: what the modules do not implement is refused by name."""

from __future__ import annotations

import copy

import pytest
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLTextConfig,
    Qwen2_5_VLVisionConfig,
)
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLConfig, Qwen2VLTextConfig, Qwen2VLVisionConfig

from jaxprobe.errors import ConfigError
from jaxprobe.families.attributes import AttributeRules, check_attributes, declared_attributes
from jaxprobe.families.qwen_vl import config as qwen
from jaxprobe.families.qwen_vl.tiny import tiny_config

RULES = [(Qwen2VLConfig, qwen.TOP_RULES), (Qwen2_5_VLConfig, qwen.TOP_RULES), (Qwen2VLTextConfig, qwen.TEXT_RULES),
         (Qwen2_5_VLTextConfig, qwen.TEXT_RULES), (Qwen2VLVisionConfig, qwen.VISION_RULES),
         (Qwen2_5_VLVisionConfig, qwen.VISION_RULES)]


@pytest.mark.parametrize(("config_class", "rules"), RULES, ids=[c.__name__ for c, _ in RULES])
def test_every_declared_attribute_is_accounted_for(config_class, rules):
    """A transformers upgrade that adds an attribute fails here until the family classifies it."""
    assert declared_attributes(config_class) - rules.accounted() == set()


def _with(model_type: str, section: str, **changes) -> dict:
    config = copy.deepcopy(tiny_config(model_type))
    (config[section] if section else config).update(changes)
    return config


@pytest.mark.parametrize(("model_type", "section", "changes", "named"), [
    ("qwen2_5_vl", "text_config", {"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6,
                                                        "mrope_section": [2, 3, 3]}}, "rope_parameters"),
    ("qwen2_vl", "text_config", {"use_sliding_window": True, "sliding_window": 16}, "use_sliding_window"),
    ("qwen2_vl", "vision_config", {"hidden_act": "relu6"}, "hidden_act"),
    ("qwen2_5_vl", "text_config", {"rope_parameters": {"rope_type": "default", "mrope_section": [2, 2, 2],
                                                        "rope_theta": 1e6}}, "mrope_section"),
    ("qwen2_5_vl", "vision_config", {"window_size": 20}, "window_size"),
    ("qwen2_vl", "text_config", {"num_key_value_heads": 3}, "num_key_value_heads"),
])
def test_unimplemented_values_are_refused_by_name(model_type, section, changes, named):
    with pytest.raises(ConfigError, match=named):
        qwen.parse_config(_with(model_type, section, **changes))


def test_unaccounted_attribute_is_refused_unless_default():
    """An attribute the rules do not know (as after a transformers upgrade) passes only at its default."""
    hf = Qwen2VLTextConfig(vocab_size=1000)
    narrow = AttributeRules("text_config", handled=qwen.TEXT_RULES.handled - {"vocab_size"},
                            inert=qwen.TEXT_RULES.inert, checks=qwen.TEXT_RULES.checks)
    with pytest.raises(ConfigError, match=r"text_config\.vocab_size=1000 is an attribute"):
        check_attributes(hf, narrow, "qwen_vl")
    check_attributes(Qwen2VLTextConfig(), narrow, "qwen_vl")  # at the default: accepted


def test_other_model_types_and_broken_files_are_config_errors():
    with pytest.raises(ConfigError, match="not a qwen_vl model"):
        qwen.parse_config({"model_type": "gemma3"})
    broken = tiny_config("qwen2_vl")
    broken["vision_config"]["hidden_size"] = 48  # Qwen2-VL: the merger's output no longer the LLM's width
    with pytest.raises(ConfigError, match="merger emits"):
        qwen.parse_config(broken)
