"""Our module configs (frozen dataclasses) and their translation from a checkpoint's ``config.json``.

transformers' config classes parse ``config.json`` (defaults, legacy keys such as ``rope_scaling``); we copy out
only what our modules need, so the modules never see a transformers object.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from jaxprobe.errors import ConfigError

SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")
DEFAULT_VISION_THETA = 10000.0


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    family: str  # qwen2_vl: LayerNorm + fc1/act/fc2; qwen2_5_vl: RMSNorm + gated MLP + window attention
    depth: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    hidden_act: str
    patch_size: int
    temporal_patch_size: int
    in_channels: int
    merge_size: int
    out_hidden_size: int
    rope_theta: float = DEFAULT_VISION_THETA
    window_size: int = 0  # pixels; 0: every block attends over the whole image
    fullatt_block_indexes: tuple[int, ...] = ()
    norm_eps: float = 1e-6

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size**2


@dataclasses.dataclass(frozen=True)
class TextConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    mrope_section: tuple[int, ...]
    tie_word_embeddings: bool
    hidden_act: str = "silu"


@dataclasses.dataclass(frozen=True)
class VLMConfig:
    model_type: str
    vision: VisionConfig
    text: TextConfig
    image_token_id: int
    vision_start_token_id: int


def _vision_config(model_type: str, hf) -> VisionConfig:
    theta = (getattr(hf, "rope_parameters", None) or {}).get("rope_theta", DEFAULT_VISION_THETA)
    common = dict(family=model_type, depth=hf.depth, num_heads=hf.num_heads, patch_size=hf.patch_size,
                  temporal_patch_size=hf.temporal_patch_size, in_channels=hf.in_channels,
                  merge_size=hf.spatial_merge_size, rope_theta=float(theta), hidden_act=hf.hidden_act)
    if model_type == "qwen2_vl":
        return VisionConfig(hidden_size=hf.embed_dim, intermediate_size=int(hf.embed_dim * hf.mlp_ratio),
                            out_hidden_size=hf.hidden_size, **common)
    return VisionConfig(hidden_size=hf.hidden_size, intermediate_size=hf.intermediate_size,
                        out_hidden_size=hf.out_hidden_size, window_size=hf.window_size,
                        fullatt_block_indexes=tuple(hf.fullatt_block_indexes), **common)


def _text_config(hf, tie: bool) -> TextConfig:
    rope = hf.rope_parameters or {}
    head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    if sum(rope["mrope_section"]) != head_dim // 2:
        raise ConfigError(f"rope_parameters.mrope_section {rope['mrope_section']} must sum to head_dim / 2 = "
                          f"{head_dim // 2}; config.json is inconsistent")
    return TextConfig(vocab_size=hf.vocab_size, hidden_size=hf.hidden_size, intermediate_size=hf.intermediate_size,
                      num_layers=hf.num_hidden_layers, num_heads=hf.num_attention_heads,
                      num_kv_heads=hf.num_key_value_heads, head_dim=head_dim, rms_norm_eps=hf.rms_norm_eps,
                      rope_theta=float(rope["rope_theta"]), mrope_section=tuple(rope["mrope_section"]),
                      tie_word_embeddings=tie, hidden_act=hf.hidden_act)


def from_hf_config(source: str | Path | dict) -> VLMConfig:
    """Translate ``config.json`` (a checkpoint directory or its parsed dict), read by transformers' own config
    classes, into our module configs."""
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(source, dict):
        model_type = source.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(f"model_type {model_type!r} is not supported; jaxprobe supports "
                              f"{', '.join(SUPPORTED_MODEL_TYPES)}")
        hf: PretrainedConfig = AutoConfig.for_model(**source)
    else:
        path = Path(source)
        if not (path / "config.json").is_file():
            raise ConfigError(f"no config.json in {path}")
        hf = AutoConfig.from_pretrained(path)
    if hf.model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(f"model_type {hf.model_type!r} is not supported; jaxprobe supports "
                          f"{', '.join(SUPPORTED_MODEL_TYPES)}")
    tie = bool(getattr(hf, "tie_word_embeddings", False) or getattr(hf.text_config, "tie_word_embeddings", False))
    return VLMConfig(model_type=hf.model_type, vision=_vision_config(hf.model_type, hf.vision_config),
                     text=_text_config(hf.text_config, tie), image_token_id=hf.image_token_id,
                     vision_start_token_id=hf.vision_start_token_id)
