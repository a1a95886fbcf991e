"""Tiny random Qwen2-VL / Qwen2.5-VL checkpoints in the hub's layout, written offline and without torch.

Sizes are data (one dict per model type) and can be overridden, e.g. to make the few-hundred-MB checkpoint of
the memory benchmark. transformers loads the result as is (tested).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from safetensors.numpy import save_file

from jaxprobe.errors import CheckpointError
from jaxprobe.families.tiny import Shapes, decoder_shapes, linear, norm, random_tensors, write_json, write_tokenizer
from jaxprobe.weights.reader import SINGLE_FILE

SPECIAL_TOKENS = (  # id = position; config.json's token ids are derived from this tuple
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
TOKEN_ID = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
CHAT_TEMPLATE_FILE = "chat_template.jinja"
_TEXT = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e6},
    "tie_word_embeddings": False,
    "bos_token_id": TOKEN_ID["<|endoftext|>"],
    "eos_token_id": TOKEN_ID["<|im_end|>"],
}
_VISION_COMMON = {"num_heads": 4, "patch_size": 8, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3}
TINY_CONFIGS: dict[str, dict[str, Any]] = {  # model_type -> config.json without token ids
    "qwen2_vl": {
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "text_config": {**_TEXT, "model_type": "qwen2_vl_text"},
        "vision_config": {
            **_VISION_COMMON,
            "model_type": "qwen2_vl_vision",
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": _TEXT["hidden_size"],  # Qwen2-VL: the merger's output width
            "mlp_ratio": 2,
            "hidden_act": "quick_gelu",
        },
    },
    "qwen2_5_vl": {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "text_config": {**_TEXT, "model_type": "qwen2_5_vl_text"},
        "vision_config": {
            **_VISION_COMMON,
            "model_type": "qwen2_5_vl_vision",
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "out_hidden_size": _TEXT["hidden_size"],
            "hidden_act": "silu",
            "window_size": 32,  # pixels: 2x2 merged tokens per window at patch 8 / merge 2
            "fullatt_block_indexes": [1],
            "tokens_per_second": 2,
        },
    },
}
_IMAGE_PROCESSOR = {
    "image_processor_type": "Qwen2VLImageProcessor",
    "do_resize": True,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "do_convert_rgb": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],  # the OpenAI-CLIP statistics Qwen-VL uses
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}
MIN_MERGED_SIDE, MAX_MERGED_SIDE = 2, 4  # image side in merged tokens: 2x2 .. 4x4 image tokens per image


def tiny_config(model_type: str, text: Mapping[str, Any] | None = None,
                vision: Mapping[str, Any] | None = None) -> dict:
    """The full config.json of a tiny ``model_type`` model, with optional text/vision size overrides."""
    if model_type not in TINY_CONFIGS:
        raise CheckpointError(f"no tiny qwen_vl checkpoint for model_type {model_type!r}; choose one of "
                              f"{sorted(TINY_CONFIGS)}")
    spec = copy.deepcopy(TINY_CONFIGS[model_type])
    spec["text_config"].update(text or {})
    spec["vision_config"].update(vision or {})
    text_hidden = spec["text_config"]["hidden_size"]
    out_key = "out_hidden_size" if model_type == "qwen2_5_vl" else "hidden_size"
    if out_key not in (vision or {}):
        spec["vision_config"][out_key] = text_hidden  # the merger must emit the LLM's width
    return {
        "model_type": model_type,
        **spec,
        "image_token_id": TOKEN_ID["<|image_pad|>"],
        "video_token_id": TOKEN_ID["<|video_pad|>"],
        "vision_start_token_id": TOKEN_ID["<|vision_start|>"],
        "vision_end_token_id": TOKEN_ID["<|vision_end|>"],
        "bos_token_id": TOKEN_ID["<|endoftext|>"],
        "eos_token_id": TOKEN_ID["<|im_end|>"],
        "tie_word_embeddings": spec["text_config"]["tie_word_embeddings"],
        "torch_dtype": "float32",
        "dtype": "float32",
    }


def _vision_shapes(
    vision: Mapping[str, Any], width: int, out_dim: int, block_mlp: Callable[[str], Shapes], layer_norm: bool
) -> Shapes:
    """Patch embedding (Conv3d, no bias), blocks and patch merger shared by both Qwen-VL vision towers."""
    merged = width * vision["spatial_merge_size"] ** 2
    patch = (width, vision["in_channels"], vision["temporal_patch_size"], vision["patch_size"], vision["patch_size"])
    shapes: Shapes = {"visual.patch_embed.proj.weight": patch}
    for i in range(vision["depth"]):
        p = f"visual.blocks.{i}"
        shapes |= norm(f"{p}.norm1", width, bias=layer_norm)
        shapes |= norm(f"{p}.norm2", width, bias=layer_norm)
        shapes |= linear(f"{p}.attn.qkv", 3 * width, width)
        shapes |= linear(f"{p}.attn.proj", width, width)
        shapes |= block_mlp(f"{p}.mlp")
    shapes |= norm("visual.merger.ln_q", width, bias=layer_norm)
    shapes |= linear("visual.merger.mlp.0", merged, merged)
    shapes |= linear("visual.merger.mlp.2", out_dim, merged)
    return shapes


def qwen2_vl_shapes(config: Mapping[str, Any]) -> Shapes:
    """Qwen2-VL: LayerNorm blocks with a quick-GELU fc1/fc2 MLP."""
    v = config["vision_config"]
    width, inner = v["embed_dim"], v["embed_dim"] * v["mlp_ratio"]

    def mlp(p: str) -> Shapes:
        return linear(f"{p}.fc1", inner, width) | linear(f"{p}.fc2", width, inner)

    return (decoder_shapes(config["text_config"], qkv_bias=True)
            | _vision_shapes(v, width, v["hidden_size"], mlp, layer_norm=True))


def qwen2_5_vl_shapes(config: Mapping[str, Any]) -> Shapes:
    """Qwen2.5-VL: RMSNorm blocks with a gated SiLU MLP (all projections biased)."""
    v = config["vision_config"]
    width, inner = v["hidden_size"], v["intermediate_size"]

    def mlp(p: str) -> Shapes:
        return (
            linear(f"{p}.gate_proj", inner, width)
            | linear(f"{p}.up_proj", inner, width)
            | linear(f"{p}.down_proj", width, inner)
        )

    return (decoder_shapes(config["text_config"], qkv_bias=True)
            | _vision_shapes(v, width, v["out_hidden_size"], mlp, layer_norm=False))


SHAPES: dict[str, Callable[[Mapping[str, Any]], Shapes]] = {
    "qwen2_vl": qwen2_vl_shapes,
    "qwen2_5_vl": qwen2_5_vl_shapes,
}


def image_processor_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """preprocessor_config.json for ``Qwen2VLImageProcessor``: small images -> 4..16 image tokens."""
    v = config["vision_config"]
    factor = v["patch_size"] * v["spatial_merge_size"]
    min_pixels, max_pixels = (factor * MIN_MERGED_SIDE) ** 2, (factor * MAX_MERGED_SIDE) ** 2
    return {
        **_IMAGE_PROCESSOR,
        "patch_size": v["patch_size"],
        "temporal_patch_size": v["temporal_patch_size"],
        "merge_size": v["spatial_merge_size"],
        "min_pixels": min_pixels,
        "max_pixels": max_pixels,
        "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels},
        "processor_class": "Qwen2VLProcessor" if config["model_type"] == "qwen2_vl" else "Qwen2_5_VLProcessor",
    }


def chat_template() -> str:
    """Our Qwen-VL chat template: images render as ``<|vision_start|><|image_pad|><|vision_end|>``."""
    return resources.files("jaxprobe.families.qwen_vl").joinpath(CHAT_TEMPLATE_FILE).read_text()


def write_tiny_checkpoint(model_type: str, out_dir: str | Path, seed: int = 0,
                          text: Mapping[str, Any] | None = None, vision: Mapping[str, Any] | None = None) -> Path:
    """Write a tiny random checkpoint (config, safetensors, tokenizer, processor) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = tiny_config(model_type, text, vision)
    tensors = random_tensors(SHAPES[model_type](config), seed)
    save_file(tensors, out_dir / SINGLE_FILE, metadata={"format": "pt"})
    del tensors
    write_json(out_dir / "config.json", config)
    write_json(out_dir / "preprocessor_config.json", image_processor_config(config))
    write_json(out_dir / "generation_config.json", {k: config[k] for k in ("bos_token_id", "eos_token_id")})
    write_tokenizer(out_dir, SPECIAL_TOKENS, eos="<|im_end|>", pad="<|endoftext|>", chat_template=chat_template())
    return out_dir
