"""Every attribute of a transformers config is handled, inert, or checked: nothing is silently ignored.

A family translates ``config.json`` through transformers' own config class (which fills defaults and legacy
keys), then accounts for each attribute that class defines:
- *handled*: copied into our module config;
- *inert*: cannot change the forward we run (initializer ranges, cache flags, video token ids, ...);
- *checked*: the modules implement one value only (e.g. ``use_sliding_window=False``); another value is refused.
An attribute the config class declares that the family does not account for (a newer transformers) is refused
unless it holds the class's default, with a ``ConfigError`` naming it, instead of running a model that computes
something else than the checkpoint's authors meant. Keys the class does not declare are never read by
transformers' forward either (families list the few read through ``getattr``, e.g. ``head_dim``, as handled).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from jaxprobe.errors import ConfigError

# Attributes every transformers ``PretrainedConfig`` carries that never change a forward.
COMMON_INERT = frozenset({
    "transformers_version", "architectures", "output_hidden_states", "output_attentions", "return_dict", "dtype",
    "torch_dtype", "chunk_size_feed_forward", "is_encoder_decoder", "id2label", "label2id", "problem_type",
    "_name_or_path", "model_type", "initializer_range", "use_cache", "attention_dropout", "bos_token_id",
    "eos_token_id", "pad_token_id", "max_position_embeddings", "tokenizer_class", "_attn_implementation",
    "base_config_key", "sub_configs",
})


@dataclasses.dataclass(frozen=True)
class Check:
    """One value (or predicate) the modules implement for an attribute, and how to say it."""

    accepts: Callable[[Any], bool]
    supported: str  # e.g. "False" or "'default' or 'mrope'"


@dataclasses.dataclass(frozen=True)
class AttributeRules:
    section: str  # "text_config", "vision_config" or "" for the top level, for messages
    handled: frozenset[str]
    inert: frozenset[str] = frozenset()
    checks: Mapping[str, Check] = dataclasses.field(default_factory=dict)

    def accounted(self) -> frozenset[str]:
        return self.handled | self.inert | COMMON_INERT | frozenset(self.checks)


def declared_attributes(config_class: type) -> set[str]:
    """The attributes a transformers config class defines (its constructor's parameters)."""
    return {name for name in inspect.signature(config_class.__init__).parameters if name not in ("self", "kwargs")}


def parse_hf_config(config_json: Mapping[str, Any], model_types: tuple[str, ...], family: str) -> Any:
    """transformers' config object of ``config_json`` (its own class checks types and fills defaults), after
    checking that the ``model_type`` is one of ``family``'s."""
    from transformers import AutoConfig

    model_type = config_json.get("model_type")
    if model_type not in model_types:
        raise ConfigError(f"model_type {model_type!r} is not a {family} model ({', '.join(model_types)})")
    try:
        return AutoConfig.for_model(**config_json)
    except (TypeError, ValueError, KeyError) as error:
        raise ConfigError(f"config.json of this {model_type} checkpoint does not parse: {error}") from error


def check_attributes(hf_config: Any, rules: AttributeRules, family: str) -> None:
    """Refuse checked attributes with unsupported values and unaccounted attributes away from their default."""
    where = f"{rules.section}." if rules.section else ""
    values = hf_config.to_dict()
    for name, check in rules.checks.items():
        if name in values and not check.accepts(values[name]):
            raise ConfigError(f"config.json {where}{name}={values[name]!r} is not implemented by jaxprobe's {family} "
                              f"models (supported: {check.supported}); this checkpoint would compute something else")
    defaults = type(hf_config)().to_dict()
    for name in sorted((declared_attributes(type(hf_config)) & set(values)) - rules.accounted()):
        if name in defaults and values[name] == defaults[name]:
            continue
        raise ConfigError(f"config.json {where}{name}={values[name]!r} is an attribute jaxprobe's {family} translation "
                          "does not know; it may change the forward, so the checkpoint is refused. Report it with "
                          "the checkpoint's name")


def equals(value: Any) -> Check:
    return Check(lambda found: found == value, repr(value))
