"""Gemma 3 ``config.json`` (``Gemma3ForConditionalGeneration``: MedGemma, Gemma 3) -> our module configs, every
attribute accounted for.

The decoder half is the shared Gemma 3 text translation (``decoder_config.text_config``) plus bidirectional
attention among one image's tokens (transformers applies it whenever the processor's ``token_type_ids`` reach
the forward, which they always do). The tower is SigLIP read after its final LayerNorm, and the connector is the
average-pooling projector.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from jaxprobe.errors import ConfigError
from jaxprobe.families.attributes import AttributeRules, Check, check_attributes, parse_hf_config
from jaxprobe.families.decoder_config import text_config
from jaxprobe.models.config import ConnectorConfig, VisionConfig, VLMConfig
from jaxprobe.models.layers import ACTIVATIONS

FAMILY = "gemma3"
MODEL_TYPES = ("gemma3",)
TEXT_ONLY_REASON = ("a text-only Gemma 3 checkpoint (Gemma3ForCausalLM, e.g. MedGemma-27B-text); jaxprobe probes "
                    "where an image's signal is lost, so it needs the vision tower: use the multimodal checkpoint "
                    "(model_type 'gemma3', e.g. google/medgemma-27b-it)")
VISION_MODEL_TYPE = "siglip_vision_model"

TOP_RULES = AttributeRules(
    "", handled=frozenset({"text_config", "vision_config", "mm_tokens_per_image", "image_token_index",
                           "tie_word_embeddings"}),
    inert=frozenset({"boi_token_index", "eoi_token_index"}))  # ordinary text tokens around the image span
VISION_RULES = AttributeRules(
    "vision_config",
    handled=frozenset({"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                       "num_channels", "image_size", "patch_size", "layer_norm_eps"}),
    inert=frozenset({"vision_use_head"}),  # the attention-pooling head: Gemma 3 reads the patch features
    checks={"hidden_act": Check(lambda act: act in ACTIVATIONS, f"one of {sorted(ACTIVATIONS)}")},
)


def _vision(hf: Any) -> VisionConfig:
    if hf.model_type != VISION_MODEL_TYPE:
        raise ConfigError(f"config.json vision_config.model_type={hf.model_type!r}; jaxprobe's gemma3 family "
                          f"implements the SigLIP tower ({VISION_MODEL_TYPE!r})")
    check_attributes(hf, VISION_RULES, FAMILY)
    if hf.image_size % hf.patch_size:
        raise ConfigError(f"config.json vision_config.image_size={hf.image_size} is not a multiple of patch_size="
                          f"{hf.patch_size}; config.json is inconsistent")
    return VisionConfig(tower="vit", depth=hf.num_hidden_layers, hidden_size=hf.hidden_size,
                        num_heads=hf.num_attention_heads, intermediate_size=hf.intermediate_size,
                        hidden_act=hf.hidden_act, patch_size=hf.patch_size, in_channels=hf.num_channels,
                        norm_eps=hf.layer_norm_eps, image_size=hf.image_size, post_norm=True)


def pooling_kernel(vision: VisionConfig, mm_tokens_per_image: int) -> int:
    """The projector's average-pooling kernel: (image_size / patch_size) / sqrt(mm_tokens_per_image), refused when
    the tokens do not tile the patch grid (transformers would emit another number of tokens than the prompt has)."""
    patches_per_side = vision.image_size // vision.patch_size
    tokens_per_side = math.isqrt(mm_tokens_per_image)
    if tokens_per_side**2 != mm_tokens_per_image or patches_per_side % tokens_per_side:
        raise ConfigError(f"config.json mm_tokens_per_image={mm_tokens_per_image} must be the square of a divisor of "
                          f"the {patches_per_side} patches per side (image_size / patch_size); config.json is "
                          "inconsistent")
    return patches_per_side // tokens_per_side


def parse_config(config_json: dict[str, Any]) -> VLMConfig:
    """Our ``VLMConfig`` for a Gemma 3 multimodal ``config.json`` (refusing what we do not implement)."""
    if config_json.get("model_type") == "gemma3_text":
        raise ConfigError(f"model_type 'gemma3_text': {TEXT_ONLY_REASON}")
    hf = parse_hf_config(config_json, MODEL_TYPES, FAMILY)
    check_attributes(hf, TOP_RULES, FAMILY)
    vision = _vision(hf.vision_config)
    # Gemma3ForConditionalGeneration ties its LM head by the top-level flag, not the text config's.
    text = text_config(hf.text_config, FAMILY, tie_word_embeddings=bool(hf.tie_word_embeddings))
    text = dataclasses.replace(text, bidirectional_image_attention=True)
    connector = ConnectorConfig("avg_pool", vision.hidden_size, text.hidden_size, norm="rmsnorm",
                                norm_eps=vision.norm_eps, merge_size=pooling_kernel(vision, hf.mm_tokens_per_image))
    return VLMConfig(vision, connector, text, image_token_id=hf.image_token_index)


def mm_tokens_per_image(config: VLMConfig) -> int:
    """Image tokens per image: the pooled patch grid."""
    return (config.vision.image_size // config.vision.patch_size // config.connector.merge_size) ** 2
