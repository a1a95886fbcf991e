"""Qwen2-VL / Qwen2.5-VL ``config.json`` -> our module configs, every attribute accounted for.

transformers' own config classes parse the file (defaults, legacy ``rope_scaling``); ``attributes`` checks that
each attribute is either used here, inert, or at the one value our modules implement.
"""

from __future__ import annotations

from typing import Any

from jaxprobe.errors import ConfigError
from jaxprobe.families.attributes import AttributeRules, Check, check_attributes, equals, parse_hf_config
from jaxprobe.models.config import ConnectorConfig, TextConfig, VisionConfig, VLMConfig
from jaxprobe.models.layers import ACTIVATIONS

FAMILY = "qwen_vl"
MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")
ROPE_TYPES = ("default", "mrope")  # the decoder's M-RoPE (transformers 5 calls it "default")
VISION_ROPE_TYPES = ("default", "axial")  # the towers' 2-D rotary

_activation = Check(lambda act: act in ACTIVATIONS, f"one of {sorted(ACTIVATIONS)}")


def _rope_type(kinds: tuple[str, ...]) -> Check:
    return Check(lambda rope: (rope or {}).get("rope_type", (rope or {}).get("type", "default")) in kinds,
                 f"rope_type in {kinds} (no rope scaling)")


TOP_RULES = AttributeRules("", handled=frozenset({"text_config", "vision_config", "image_token_id",
                                                  "tie_word_embeddings"}),
                           inert=frozenset({"video_token_id", "vision_start_token_id", "vision_end_token_id"}))
TEXT_RULES = AttributeRules(
    "text_config",
    handled=frozenset({"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                       "num_key_value_heads", "rms_norm_eps", "head_dim", "tie_word_embeddings"}),
    inert=frozenset({"sliding_window", "max_window_layers"}),  # read only when use_sliding_window is on
    checks={"use_sliding_window": equals(False), "hidden_act": _activation, "rope_parameters": _rope_type(ROPE_TYPES),
            "layer_types": Check(lambda kinds: kinds is None or set(kinds) <= {"full_attention"},
                                 "every layer 'full_attention'")},
)
VISION_RULES = AttributeRules(
    "vision_config",
    handled=frozenset({"depth", "embed_dim", "hidden_size", "mlp_ratio", "num_heads", "in_channels", "patch_size",
                       "spatial_merge_size", "temporal_patch_size", "intermediate_size", "window_size",
                       "out_hidden_size", "fullatt_block_indexes"}),
    inert=frozenset({"tokens_per_second"}),  # video positions only
    checks={"hidden_act": _activation, "rope_parameters": _rope_type(VISION_ROPE_TYPES)},
)


def _vision(model_type: str, hf: Any) -> VisionConfig:
    theta = float((hf.rope_parameters or {}).get("rope_theta", 10000.0))
    common = dict(tower="qwen_vit", depth=hf.depth, num_heads=hf.num_heads, patch_size=hf.patch_size,
                  temporal_patch_size=hf.temporal_patch_size, in_channels=hf.in_channels,
                  merge_size=hf.spatial_merge_size, rope_theta=theta, hidden_act=hf.hidden_act)
    if model_type == "qwen2_vl":
        return VisionConfig(hidden_size=hf.embed_dim, intermediate_size=int(hf.embed_dim * hf.mlp_ratio), **common)
    if hf.window_size % (hf.patch_size * hf.spatial_merge_size):
        raise ConfigError(f"config.json vision_config.window_size={hf.window_size} must be a multiple of patch_size x "
                          f"spatial_merge_size = {hf.patch_size * hf.spatial_merge_size}")
    return VisionConfig(hidden_size=hf.hidden_size, intermediate_size=hf.intermediate_size, norm="rmsnorm",
                        mlp="gated", window_size=hf.window_size, fullatt_block_indexes=tuple(hf.fullatt_block_indexes),
                        **common)


def _text(hf: Any, tie: bool) -> TextConfig:
    rope = hf.rope_parameters or {}
    head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    section = tuple(rope.get("mrope_section", ()))
    if sum(section) != head_dim // 2:
        raise ConfigError(f"config.json text_config.rope_parameters.mrope_section {list(section)} must sum to "
                          f"head_dim / 2 = {head_dim // 2}; config.json is inconsistent")
    if hf.num_attention_heads % hf.num_key_value_heads:
        raise ConfigError(f"config.json text_config.num_attention_heads={hf.num_attention_heads} is not a multiple of "
                          f"num_key_value_heads={hf.num_key_value_heads}")
    return TextConfig(vocab_size=hf.vocab_size, hidden_size=hf.hidden_size, intermediate_size=hf.intermediate_size,
                      num_layers=hf.num_hidden_layers, num_heads=hf.num_attention_heads,
                      num_kv_heads=hf.num_key_value_heads, head_dim=head_dim, norm_eps=hf.rms_norm_eps,
                      rope_theta=float(rope["rope_theta"]), rope_kind="mrope", mrope_section=section, qkv_bias=True,
                      hidden_act=hf.hidden_act, tie_word_embeddings=tie)


def parse_config(config_json: dict[str, Any]) -> VLMConfig:
    """Our ``VLMConfig`` for a Qwen2-VL / Qwen2.5-VL ``config.json`` (refusing what we do not implement)."""
    hf = parse_hf_config(config_json, MODEL_TYPES, FAMILY)
    model_type = hf.model_type
    check_attributes(hf, TOP_RULES, FAMILY)
    check_attributes(hf.text_config, TEXT_RULES, FAMILY)
    check_attributes(hf.vision_config, VISION_RULES, FAMILY)
    tie = bool(getattr(hf, "tie_word_embeddings", False) or getattr(hf.text_config, "tie_word_embeddings", False))
    vision = _vision(model_type, hf.vision_config)
    text = _text(hf.text_config, tie)
    out_size = hf.vision_config.hidden_size if model_type == "qwen2_vl" else hf.vision_config.out_hidden_size
    if out_size != text.hidden_size:
        raise ConfigError(f"the vision merger emits {out_size} features but the LLM's hidden_size is "
                          f"{text.hidden_size}; config.json is inconsistent")
    connector = ConnectorConfig("patch_merger", vision.hidden_size, out_size, norm=vision.norm,
                                norm_eps=vision.norm_eps, merge_size=vision.merge_size)
    return VLMConfig(vision, connector, text, image_token_id=hf.image_token_id)
