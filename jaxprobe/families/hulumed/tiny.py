"""Tiny random Hulu-Med checkpoints in the hub's layout, written offline and without torch.

config.json is flat like the hub's (Qwen2/Qwen3 LLM keys, legacy ``rope_theta``, the multimodal keys and the
legacy ones Hulu's configs carry), the safetensors use the hub's main-branch names (or, with
``layout="original"``, the training layout's ``model.vision_encoder.vision_encoder.*``), and the processor files
are those Hulu's processor reads: ``preprocessor_config.json`` (0.5/0.5 normalisation, a small token budget so
tiny images stay small) and ``chat_template.json``. transformers has no Hulu-Med class; the family's reference
loads these files into transformers' VideoLLaMA3 with every tensor used (tested).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from safetensors.numpy import save_file

from jaxprobe.errors import CheckpointError
from jaxprobe.families.hulumed.keymap import ORIGINAL_VISION_PREFIX, VISION_PREFIX
from jaxprobe.families.tiny import Shapes, linear, norm, random_tensors, write_json, write_tokenizer
from jaxprobe.weights.reader import SINGLE_FILE

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>")  # id = position
TOKEN_ID = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
LAYOUTS = ("hub", "original")
_LLM = {
    "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_act": "silu", "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6, "rope_theta": 1e6, "rope_scaling": None, "use_sliding_window": False,
    "sliding_window": None, "max_window_layers": 2, "attention_dropout": 0.0, "initializer_range": 0.02,
    "use_cache": True, "bos_token_id": TOKEN_ID["<|endoftext|>"], "eos_token_id": TOKEN_ID["<|im_end|>"],
}
TINY_LLM: dict[str, dict[str, Any]] = {
    "hulumed_qwen2": {**_LLM, "tie_word_embeddings": False},  # Qwen2.5: q/k/v bias, untied (7B, 32B)
    "hulumed_qwen3": {**_LLM, "head_dim": 24, "attention_bias": False, "tie_word_embeddings": True},  # like the 4B
}
TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "patch_size": 8, "model_type": "hulumed_vision_encoder"}
LEGACY = {  # what Hulu's configs carry besides the model (inert for jaxprobe; config.py says why)
    "image_aspect_ratio": "avt", "image_size": -1, "image_token_length": 1, "is_alignment": False,
    "mm_projector_lr": 1e-5, "mm_vision_select_feature": "patch", "mm_vision_select_layer": -1,
    "tokenizer_model_max_length": 2048, "tokenizer_padding_side": "right", "use_mm_proj": True,
}
IMAGE_PROCESSOR = {
    "image_processor_type": "HulumedImageProcessor", "processor_class": "HulumedProcessor", "do_resize": True,
    "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": True,
    "min_tokens": 16, "max_tokens": 64,  # 4x4 .. 8x8 patches: a 64 x 64 image at patch 8 fills the budget
}


def tiny_config(model_type: str, llm: Mapping[str, Any] | None = None,
                vision: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The full config.json of a tiny ``model_type`` model, with optional LLM / vision size overrides."""
    if model_type not in TINY_LLM:
        raise CheckpointError(f"no tiny hulumed checkpoint for model_type {model_type!r}; choose one of "
                              f"{sorted(TINY_LLM)}")
    architecture = "HulumedQwen2ForCausalLM" if model_type == "hulumed_qwen2" else "HulumedQwen3ForCausalLM"
    return {
        **copy.deepcopy(TINY_LLM[model_type]), **(llm or {}), **LEGACY,
        "model_type": model_type, "architectures": [architecture], "torch_dtype": "float32",
        "auto_map": {"AutoConfig": f"configuration_{model_type}.{architecture.replace('ForCausalLM', 'Config')}",
                     "AutoModelForCausalLM": f"modeling_{model_type}.{architecture}"},
        "vision_encoder_config": {**TINY_VISION, **(vision or {})},
        "mm_projector_type": "mlp2x_gelu", "use_token_compression": False,
        "image_token_index": TOKEN_ID["<image>"],
    }


def llm_shapes(config: Mapping[str, Any]) -> Shapes:
    """The Qwen2 (q/k/v bias) or Qwen3 (q/k RMSNorm, no bias) decoder under the hub's ``model.*`` names."""
    hidden, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    q_dim, kv_dim = config["num_attention_heads"] * head_dim, config["num_key_value_heads"] * head_dim
    qwen3 = config["model_type"] == "hulumed_qwen3"
    shapes: Shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    if not config["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (vocab, hidden)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}"
        shapes |= norm(f"{p}.input_layernorm", hidden, bias=False) | norm(f"{p}.post_attention_layernorm", hidden,
                                                                          bias=False)
        for name, out in (("q_proj", q_dim), ("k_proj", kv_dim), ("v_proj", kv_dim)):
            shapes |= linear(f"{p}.self_attn.{name}", out, hidden, bias=not qwen3)
        shapes |= linear(f"{p}.self_attn.o_proj", hidden, q_dim, bias=False)
        if qwen3:
            shapes |= norm(f"{p}.self_attn.q_norm", head_dim, bias=False) | norm(f"{p}.self_attn.k_norm", head_dim,
                                                                                 bias=False)
        for name, out, inp in (("gate_proj", inter, hidden), ("up_proj", inter, hidden), ("down_proj", hidden, inter)):
            shapes |= linear(f"{p}.mlp.{name}", out, inp, bias=False)
    return shapes


def vision_shapes(vision: Mapping[str, Any], llm_hidden: int, prefix: str = VISION_PREFIX) -> Shapes:
    """The NaViT encoder (SigLIP names, no position embedding) and the mlp2x_gelu projector."""
    width, inner, patch = vision["hidden_size"], vision["intermediate_size"], vision["patch_size"]
    shapes: Shapes = {f"{prefix}embeddings.patch_embedding.weight": (width, vision.get("num_channels", 3), patch,
                                                                     patch),
                      f"{prefix}embeddings.patch_embedding.bias": (width,)}
    for i in range(vision["num_hidden_layers"]):
        p = f"{prefix}encoder.layers.{i}"
        shapes |= norm(f"{p}.layer_norm1", width, bias=True) | norm(f"{p}.layer_norm2", width, bias=True)
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes |= linear(f"{p}.self_attn.{name}", width, width)
        shapes |= linear(f"{p}.mlp.fc1", inner, width) | linear(f"{p}.mlp.fc2", width, inner)
    shapes |= norm(f"{prefix}post_layernorm", width, bias=True)
    return shapes | linear("model.mm_projector.readout.0", llm_hidden, width) | linear(
        "model.mm_projector.readout.2", llm_hidden, llm_hidden)


def chat_template() -> str:
    return resources.files("jaxprobe.families.hulumed").joinpath("chat_template.jinja").read_text()


def write_tiny_checkpoint(model_type: str, out_dir: str | Path, seed: int = 0, layout: str = "hub",
                          llm: Mapping[str, Any] | None = None, vision: Mapping[str, Any] | None = None) -> Path:
    """Write a tiny random checkpoint (config, safetensors, tokenizer, processor files) into ``out_dir``."""
    if layout not in LAYOUTS:
        raise CheckpointError(f"layout {layout!r} is not one of {LAYOUTS}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = tiny_config(model_type, llm, vision)
    prefix = VISION_PREFIX if layout == "hub" else ORIGINAL_VISION_PREFIX
    shapes = llm_shapes(config) | vision_shapes(config["vision_encoder_config"], config["hidden_size"], prefix)
    save_file(random_tensors(shapes, seed), out_dir / SINGLE_FILE, metadata={"format": "pt"})
    write_json(out_dir / "config.json", config)
    write_json(out_dir / "preprocessor_config.json",
               {**IMAGE_PROCESSOR, "patch_size": config["vision_encoder_config"]["patch_size"]})
    write_json(out_dir / "chat_template.json", {"chat_template": chat_template()})
    write_json(out_dir / "generation_config.json", {k: config[k] for k in ("bos_token_id", "eos_token_id")})
    write_tokenizer(out_dir, SPECIAL_TOKENS, eos="<|im_end|>", pad="<|endoftext|>", chat_template=chat_template())
    return out_dir
