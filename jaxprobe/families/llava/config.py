"""LLaVA ``config.json`` -> our module configs, every attribute accounted for: transformers' ``llava`` layout here,
the LLaVA repository's (``llava_llama`` / ``llava_mistral`` / ``llava_qwen2``) in ``repository.py``.

Both layouts compute the same model: a CLIP vision tower read at one inner block (``hidden_states[k]``, LLaVA's
``-2``), with or without its CLS token, an ``mlp2x_gelu`` projector, and a Llama / Mistral / Qwen2 decoder whose
image-token embeddings are replaced by the projector's output.
"""

from __future__ import annotations

from typing import Any

from jaxprobe.errors import ConfigError
from jaxprobe.families.attributes import AttributeRules, check_attributes, equals, parse_hf_config
from jaxprobe.families.decoder_config import ACTIVATION, text_config
from jaxprobe.models.config import ConnectorConfig, TextConfig, VisionConfig, VLMConfig

FAMILY = "llava"
HF_MODEL_TYPE = "llava"
REPOSITORY_MODEL_TYPES = ("llava_llama", "llava_mistral", "llava_qwen2")
MODEL_TYPES = (HF_MODEL_TYPE, *REPOSITORY_MODEL_TYPES)
LLM_TYPES = ("llama", "mistral", "qwen2")  # the decoders the issue asks for, each covered by a conformance case
STRATEGIES = {"default": True, "full": False}  # vision_feature_select_strategy -> drop the CLS token

TOP_RULES = AttributeRules(
    "", handled=frozenset({"text_config", "vision_config", "image_token_index", "vision_feature_layer",
                           "vision_feature_select_strategy", "tie_word_embeddings"}),
    # the processor's image-token count, never read by the forward: encode checks its count against the tower
    inert=frozenset({"image_seq_length"}),
    checks={"projector_hidden_act": equals("gelu"), "multimodal_projector_bias": equals(True)})
CLIP_RULES = AttributeRules(
    "vision_config", handled=frozenset({"hidden_size", "intermediate_size", "num_hidden_layers",
                                        "num_attention_heads", "num_channels", "image_size", "patch_size",
                                        "layer_norm_eps"}),
    inert=frozenset({"projection_dim", "initializer_factor"}),  # CLIP's contrastive head, init scale: unused
    checks={"hidden_act": ACTIVATION})


def feature_block(layer: Any, depth: int, where: str) -> int:
    """Our block index for transformers' / LLaVA's ``hidden_states[layer]``: entry 0 is the embedding output,
    entry k the output of block k - 1 (negative k counts from the last block)."""
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ConfigError(f"config.json {where}={layer!r}: jaxprobe reads one vision layer (an int); several layers "
                          "concatenated are not implemented")
    if not -depth <= layer <= depth or layer == 0:
        raise ConfigError(f"config.json {where}={layer} must name a block output of the {depth}-block tower "
                          f"(1..{depth} or -{depth}..-1); 0 / -{depth + 1} (the embeddings) are not implemented")
    return layer - 1 if layer > 0 else depth + layer


def clip_vision(hf: Any, layer: Any, drop_cls: bool, where: str) -> VisionConfig:
    """Our ``VisionConfig`` for a transformers ``CLIPVisionConfig`` read at ``hidden_states[layer]``."""
    check_attributes(hf, CLIP_RULES, FAMILY)
    if hf.image_size % hf.patch_size:
        raise ConfigError(f"config.json vision_config.image_size={hf.image_size} is not a multiple of patch_size="
                          f"{hf.patch_size}")
    if hf.hidden_size % hf.num_attention_heads:
        raise ConfigError(f"config.json vision_config.hidden_size={hf.hidden_size} is not a multiple of "
                          f"num_attention_heads={hf.num_attention_heads}")
    return VisionConfig(tower="vit", depth=hf.num_hidden_layers, hidden_size=hf.hidden_size,
                        num_heads=hf.num_attention_heads, intermediate_size=hf.intermediate_size,
                        hidden_act=hf.hidden_act, patch_size=hf.patch_size, in_channels=hf.num_channels,
                        norm_eps=hf.layer_norm_eps, image_size=hf.image_size, class_token=True, patch_bias=False,
                        pre_norm=True, post_norm=False, drop_cls=drop_cls,
                        feature_layer=feature_block(layer, hf.num_hidden_layers, where))


def llm_config(hf_text: Any, tie: bool) -> TextConfig:
    """The decoder's ``TextConfig`` (shared translation), for the LLMs this family is tested with."""
    if hf_text.model_type not in LLM_TYPES:
        raise ConfigError(f"the LLM of this LLaVA checkpoint is a {hf_text.model_type!r} model; jaxprobe's llava "
                          f"family implements {', '.join(LLM_TYPES)}")
    return text_config(hf_text, FAMILY, tie)


def assemble(vision: VisionConfig, text: TextConfig, image_token_id: int) -> VLMConfig:
    """Tower + ``mlp2x_gelu`` projector (vision width -> LLM width) + decoder."""
    if not 0 <= image_token_id < text.vocab_size:
        raise ConfigError(f"config.json image token id {image_token_id} lies outside the LLM's vocabulary "
                          f"(vocab_size={text.vocab_size})")
    connector = ConnectorConfig("mlp2x_gelu", vision.hidden_size, text.hidden_size)
    return VLMConfig(vision, connector, text, image_token_id=image_token_id)


def image_tokens(vision: VisionConfig) -> int:
    """How many image tokens the LLM receives per image: one per patch, plus CLS when it is kept."""
    return (vision.image_size // vision.patch_size) ** 2 + (0 if vision.drop_cls else 1)


def parse_hf(config_json: dict[str, Any]) -> VLMConfig:
    """transformers' ``llava`` (``LlavaForConditionalGeneration``): the -hf conversions."""
    hf = parse_hf_config(config_json, ("llava",), FAMILY)
    check_attributes(hf, TOP_RULES, FAMILY)
    if hf.vision_config.model_type != "clip_vision_model":
        raise ConfigError(f"config.json vision_config.model_type={hf.vision_config.model_type!r}: jaxprobe's llava "
                          "family implements the CLIP tower ('clip_vision_model')")
    strategy = hf.vision_feature_select_strategy
    if strategy not in STRATEGIES:
        raise ConfigError(f"config.json vision_feature_select_strategy={strategy!r}; supported: {list(STRATEGIES)}")
    vision = clip_vision(hf.vision_config, hf.vision_feature_layer, STRATEGIES[strategy], "vision_feature_layer")
    text = llm_config(hf.text_config, bool(hf.tie_word_embeddings))
    return assemble(vision, text, int(hf.image_token_index))


def parse_config(config_json: dict[str, Any]) -> VLMConfig:
    """Our ``VLMConfig`` for either layout's ``config.json`` (refusing what we do not implement)."""
    from jaxprobe.families.llava import repository

    model_type = config_json.get("model_type")
    if model_type == HF_MODEL_TYPE:
        return parse_hf(config_json)
    if model_type in REPOSITORY_MODEL_TYPES:
        return repository.parse_config(config_json)
    raise ConfigError(f"model_type {model_type!r} is not a {FAMILY} model ({', '.join(MODEL_TYPES)})")


def is_repository_layout(config_json: dict[str, Any]) -> bool:
    return config_json.get("model_type") in REPOSITORY_MODEL_TYPES

