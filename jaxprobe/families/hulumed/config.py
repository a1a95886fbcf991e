"""Hulu-Med ``config.json`` (``hulumed_qwen2`` / ``hulumed_qwen3``) -> our module configs, every key accounted for.

Hulu-Med's config is a flat Qwen2 / Qwen3 config (its remote-code class subclasses ``Qwen2Config``/``Qwen3Config``)
plus multimodal keys. transformers has no class for it, so the split is explicit: the multimodal keys are
accounted for here (used, inert, or checked), the LLM keys build transformers' ``Qwen2Config``/``Qwen3Config``
and go through the shared decoder translation (``decoder_config.text_config``), and a key neither side knows is
refused rather than ignored. The vision encoder's dict has no transformers class either and is checked the same
way, with the defaults of Hulu's ``HulumedVisionEncoderConfig`` for absent keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from jaxprobe.errors import ConfigError
from jaxprobe.families.attributes import COMMON_INERT, declared_attributes
from jaxprobe.families.decoder_config import text_config
from jaxprobe.models.config import ConnectorConfig, VisionConfig, VLMConfig
from jaxprobe.models.layers import ACTIVATIONS

FAMILY = "hulumed"
LLM_TYPES = {"hulumed_qwen2": "qwen2", "hulumed_qwen3": "qwen3"}  # model_type -> its LLM's transformers type
MODEL_TYPES = tuple(LLM_TYPES)
IMAGE_MERGE_SIZE = 1  # Hulu's processor: merge 1 for images (2 only for video / 3D, which jaxprobe does not feed)
VISION_ROPE_THETA = 10000.0  # fixed in Hulu's encoder (not a config key)
VISION_MODEL_TYPE = "hulumed_vision_encoder"
VISION_DEFAULTS = {  # HulumedVisionEncoderConfig's defaults, used for keys the dict leaves out
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "num_channels": 3, "patch_size": 16, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6,
    "attention_dropout": 0.0, "model_type": VISION_MODEL_TYPE,
}
COMPRESSION_DEFAULT = True  # the remote config class's default for an absent use_token_compression

# Keys transformers 4's PretrainedConfig wrote into every config.json (generation defaults, TF/torchscript flags,
# encoder-decoder wiring): none is read by a decoder-only forward.
LEGACY_INERT = frozenset({
    "torchscript", "use_bfloat16", "tf_legacy_loss", "pruned_heads", "is_decoder", "cross_attention_hidden_size",
    "add_cross_attention", "tie_encoder_decoder", "max_length", "min_length", "do_sample", "early_stopping",
    "num_beams", "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p", "typical_p",
    "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
    "num_return_sequences", "output_scores", "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id",
    "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
    "finetuning_task", "prefix", "sep_token_id", "decoder_start_token_id", "task_specific_params",
    "_attn_implementation_autoset", "output_attentions", "auto_map",
})


@dataclasses.dataclass(frozen=True)
class KeyRules:
    """How each key of a plain JSON section is accounted for (no transformers class declares them)."""

    section: str  # for messages: "" (top level) or "vision_encoder_config"
    handled: frozenset[str]
    inert: frozenset[str]
    checks: Mapping[str, tuple[Callable[[Any], bool], str]]  # key -> (accepts, what is supported)

    def known(self) -> frozenset[str]:
        return self.handled | self.inert | frozenset(self.checks)


def _is_navit(path: Any) -> bool:
    return path is None or "navit" in str(path).lower()


MULTIMODAL = KeyRules(
    "",
    handled=frozenset({"vision_encoder_config", "image_token_index"}),
    # Training/initialisation settings, and selectors read only by the CLIP/SigLIP encoders of the original code
    # (the NaViT encoder always feeds its last block through post_layernorm).
    inert=frozenset({"mm_projector_lr", "is_alignment", "tokenizer_model_max_length", "tokenizer_padding_side",
                     "image_aspect_ratio", "image_size", "image_token_length", "mm_vision_select_layer",
                     "mm_vision_select_feature", "use_mm_proj", "mm_attn_implementation"}),
    checks={"mm_projector_type": (lambda v: v == "mlp2x_gelu", "'mlp2x_gelu'"),
            "vision_encoder": (_is_navit, "a NaViT encoder (the original code builds a CLIP/SigLIP tower "
                                          "for other paths)")},
)
VISION = KeyRules(
    "vision_encoder_config",
    handled=frozenset({"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                       "num_channels", "patch_size", "hidden_act", "layer_norm_eps"}),
    inert=frozenset({"attention_dropout", "initializer_range"}),  # dropout is off at inference
    checks={"model_type": (lambda v: v == VISION_MODEL_TYPE, repr(VISION_MODEL_TYPE)),
            "hidden_act": (lambda v: v in ACTIVATIONS, f"one of {sorted(ACTIVATIONS)}")},
)


def check_keys(values: Mapping[str, Any], rules: KeyRules, also_known: frozenset[str] = frozenset()) -> None:
    """Refuse a checked key with another value, and any key no rule (nor ``also_known``) accounts for."""
    where = f"{rules.section}." if rules.section else ""
    for name, (accepts, supported) in rules.checks.items():
        if name in values and not accepts(values[name]):
            raise ConfigError(f"config.json {where}{name}={values[name]!r} is not implemented by jaxprobe's {FAMILY} "
                              f"models (supported: {supported}); this checkpoint would compute something else")
    unknown = sorted(set(values) - rules.known() - also_known - COMMON_INERT - LEGACY_INERT)
    if unknown:
        raise ConfigError(f"config.json {where}{unknown[0]}={values[unknown[0]]!r} is a key jaxprobe's {FAMILY} "
                          "translation does not know; it may change the forward, so the checkpoint is refused. "
                          "Report it with the checkpoint's name")


def _check_compression(config_json: Mapping[str, Any]) -> None:
    if config_json.get("use_token_compression", COMPRESSION_DEFAULT):
        raise ConfigError("config.json use_token_compression is true (or absent: Hulu-Med's default is true): it "
                          "drops video-frame tokens, and jaxprobe implements images only. It never changes an "
                          "image's tokens, so for image probing set \"use_token_compression\": false in config.json")


def vision_config(values: Mapping[str, Any]) -> VisionConfig:
    """Our ``navit`` tower config from ``vision_encoder_config`` (Hulu's defaults for absent keys)."""
    check_keys(values, VISION)
    v = {**VISION_DEFAULTS, **values}
    if v["hidden_size"] % v["num_attention_heads"] or (v["hidden_size"] // v["num_attention_heads"]) % 4:
        raise ConfigError(f"config.json vision_encoder_config: hidden_size={v['hidden_size']} over "
                          f"num_attention_heads={v['num_attention_heads']} must give a head size divisible by 4 "
                          "(2-D rotary); config.json is inconsistent")
    return VisionConfig(tower="navit", depth=v["num_hidden_layers"], hidden_size=v["hidden_size"],
                        num_heads=v["num_attention_heads"], intermediate_size=v["intermediate_size"],
                        hidden_act=v["hidden_act"], patch_size=v["patch_size"], in_channels=v["num_channels"],
                        norm_eps=float(v["layer_norm_eps"]), rope_theta=VISION_ROPE_THETA,
                        merge_size=IMAGE_MERGE_SIZE, patch_bias=True, post_norm=True)


def llm_config(config_json: Mapping[str, Any]) -> Any:
    """transformers' Qwen2Config / Qwen3Config from the LLM keys; a key that class does not declare (nor the legacy
    ``rope_theta``/``rope_scaling`` it folds into ``rope_parameters``) is refused first."""
    import transformers

    kind = LLM_TYPES[config_json["model_type"]]
    config_class = transformers.Qwen2Config if kind == "qwen2" else transformers.Qwen3Config
    llm_keys = {k: v for k, v in config_json.items() if k not in MULTIMODAL.known() | {"use_token_compression"}}
    declared = frozenset(declared_attributes(config_class) | {"rope_theta", "rope_scaling"})
    check_keys(llm_keys, KeyRules("", declared, frozenset(), {}))
    llm_keys.pop("model_type")  # else the Qwen config would claim the hulumed model_type
    if llm_keys.get("rope_scaling", ...) is None:
        llm_keys.pop("rope_scaling")  # null: no scaling (transformers warns on the deprecated key)
    try:
        return config_class(**llm_keys)
    except (TypeError, ValueError, KeyError) as error:
        raise ConfigError(f"config.json of this {config_json['model_type']} checkpoint does not parse as a {kind} "
                          f"LLM config: {error}") from error


def parse_config(config_json: dict[str, Any]) -> VLMConfig:
    """Our ``VLMConfig`` for a Hulu-Med ``config.json`` (refusing what we do not implement)."""
    model_type = config_json.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"model_type {model_type!r} is not a {FAMILY} model ({', '.join(MODEL_TYPES)})")
    _check_compression(config_json)
    multimodal = {k: v for k, v in config_json.items() if k in MULTIMODAL.known()}
    check_keys(multimodal, MULTIMODAL)
    for key in ("vision_encoder_config", "image_token_index"):
        if key not in config_json:
            raise ConfigError(f"config.json of this {model_type} checkpoint lacks {key}; it is not a merged Hulu-Med "
                              "checkpoint (download the model's config.json again)")
    text = text_config(llm_config(config_json), FAMILY)
    vision = vision_config(config_json["vision_encoder_config"])
    image_token = int(config_json["image_token_index"])
    if not 0 <= image_token < text.vocab_size:
        raise ConfigError(f"config.json image_token_index={image_token} lies outside the vocabulary "
                          f"(vocab_size={text.vocab_size}); config.json is inconsistent")
    connector = ConnectorConfig("mlp2x_gelu", vision.hidden_size, text.hidden_size)
    return VLMConfig(vision, connector, text, image_token_id=image_token)
