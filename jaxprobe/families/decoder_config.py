"""The LLM half of a family's config translation, shared by every family whose decoder is a transformers text
model: Llama, Mistral, Qwen2, Qwen3 and Gemma 3 text configs -> ``TextConfig``, every attribute accounted for
(``jaxprobe.families.attributes``)."""

from __future__ import annotations

from typing import Any

from jaxprobe.errors import ConfigError
from jaxprobe.families.attributes import AttributeRules, Check, check_attributes, equals
from jaxprobe.models.config import TextConfig
from jaxprobe.models.layers import ACTIVATIONS

ROPE_TYPES = ("default", "linear")  # linear: positions / factor
ACTIVATION = Check(lambda act: act in ACTIVATIONS, f"one of {sorted(ACTIVATIONS)}")
NONE = equals(None)
COMMON = frozenset({"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "rms_norm_eps", "head_dim", "tie_word_embeddings", "rope_parameters"})


def _rope_check(value: Any) -> bool:
    """Every rope parameter set (one per layer type for Gemma 3) is default or linear."""
    sets = value.values() if value and all(isinstance(v, dict) for v in value.values()) else [value or {}]
    return all((s or {}).get("rope_type", (s or {}).get("type", "default")) in ROPE_TYPES for s in sets)


ROPE = Check(_rope_check, f"rope_type in {ROPE_TYPES}")
FULL_LAYERS = Check(lambda kinds: kinds is None or set(kinds) <= {"full_attention"}, "every layer 'full_attention'")
RULES = {
    "llama": AttributeRules("text_config", COMMON | {"attention_bias", "mlp_bias"}, frozenset({"pretraining_tp"}),
                            {"hidden_act": ACTIVATION, "rope_parameters": ROPE}),
    "mistral": AttributeRules("text_config", COMMON | {"sliding_window"}, frozenset(),
                              {"hidden_act": ACTIVATION, "rope_parameters": ROPE}),
    "qwen2": AttributeRules("text_config", COMMON, frozenset({"sliding_window", "max_window_layers"}),
                            {"hidden_act": ACTIVATION, "rope_parameters": ROPE, "use_sliding_window": equals(False),
                             "layer_types": FULL_LAYERS}),
    "qwen3": AttributeRules("text_config", COMMON | {"attention_bias"},
                            frozenset({"sliding_window", "max_window_layers"}),
                            {"hidden_act": ACTIVATION, "rope_parameters": ROPE, "use_sliding_window": equals(False),
                             "layer_types": FULL_LAYERS}),
    "gemma3_text": AttributeRules(
        "text_config", COMMON | {"attention_bias", "query_pre_attn_scalar", "sliding_window", "layer_types"},
        frozenset(), {"hidden_activation": ACTIVATION, "rope_parameters": ROPE, "final_logit_softcapping": NONE,
                      "attn_logit_softcapping": NONE, "use_bidirectional_attention": equals(False)}),
}


def _rope(parameters: dict | None) -> tuple[float, float]:
    """(theta, linear factor) of one rope parameter set."""
    parameters = parameters or {}
    factor = parameters.get("factor", 1.0) if parameters.get("rope_type", "default") == "linear" else 1.0
    return float(parameters.get("rope_theta", 10000.0)), float(factor)


def text_config(hf: Any, family: str, tie_word_embeddings: bool | None = None) -> TextConfig:
    """Our ``TextConfig`` for a transformers text config (``hf.model_type`` picks the rules)."""
    kind = hf.model_type
    if kind not in RULES:
        raise ConfigError(f"the LLM of this checkpoint is a {kind!r} model; jaxprobe's decoder implements "
                          f"{', '.join(RULES)}")
    check_attributes(hf, RULES[kind], family)
    head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    if hf.num_attention_heads % hf.num_key_value_heads:
        raise ConfigError(f"config.json text_config.num_attention_heads={hf.num_attention_heads} is not a multiple of "
                          f"num_key_value_heads={hf.num_key_value_heads}")
    tie = bool(hf.tie_word_embeddings) if tie_word_embeddings is None else tie_word_embeddings
    common = dict(vocab_size=hf.vocab_size, hidden_size=hf.hidden_size, intermediate_size=hf.intermediate_size,
                  num_layers=hf.num_hidden_layers, num_heads=hf.num_attention_heads,
                  num_kv_heads=hf.num_key_value_heads, head_dim=head_dim, norm_eps=hf.rms_norm_eps,
                  tie_word_embeddings=tie)
    if kind == "gemma3_text":
        return _gemma3(hf, common)
    theta, factor = _rope(hf.rope_parameters)
    bias = bool(getattr(hf, "attention_bias", False))
    sliding = int(hf.sliding_window or 0) if kind == "mistral" else 0
    return TextConfig(**common, rope_theta=theta, rope_scaling=factor, hidden_act=hf.hidden_act,
                      qkv_bias=kind == "qwen2" or bias, o_bias=bias, mlp_bias=bool(getattr(hf, "mlp_bias", False)),
                      qk_norm=kind == "qwen3",
                      layer_types=("sliding_attention",) * hf.num_hidden_layers if sliding else (),
                      sliding_window=sliding)


def _gemma3(hf: Any, common: dict) -> TextConfig:
    rope = hf.rope_parameters or {}
    theta, factor = _rope(rope.get("full_attention"))
    local_theta, local_factor = _rope(rope.get("sliding_attention"))
    if local_factor != 1.0:
        raise ConfigError(f"config.json rope_parameters.sliding_attention scales positions by {local_factor}; "
                          "jaxprobe's Gemma 3 layers implement scaling on the full-attention layers only")
    return TextConfig(**common, rope_theta=theta, rope_scaling=factor, local_rope_theta=local_theta,
                      hidden_act=hf.hidden_activation, qkv_bias=bool(hf.attention_bias), o_bias=bool(hf.attention_bias),
                      qk_norm=True, norm_scale_offset=True, sandwich_norms=True, embed_scale=True,
                      attention_scale=float(hf.query_pre_attn_scalar) ** -0.5, layer_types=tuple(hf.layer_types),
                      sliding_window=int(hf.sliding_window))
