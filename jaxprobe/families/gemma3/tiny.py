"""Tiny random Gemma 3 checkpoints in the hub's layout (``vision_tower.vision_model.*``), written offline without
torch; transformers' ``Gemma3ForConditionalGeneration`` loads them as they are (tested).

The config has what makes Gemma 3 unusual at toy size: sliding and global layers (the global one not last, a
window shorter than the prompt), separate rope thetas with linear scaling on the global layers, a
``query_pre_attn_scalar`` other than head_dim, and a 6 x 6 patch grid pooled 2 x 2 to 9 image tokens.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from safetensors.numpy import save_file

from jaxprobe.errors import CheckpointError
from jaxprobe.families.tiny import Shapes, is_norm_scale, linear, norm, random_tensors, write_json, write_tokenizer
from jaxprobe.weights.reader import SINGLE_FILE

SPECIAL_TOKENS = (  # id = position, Gemma's order for the first three; config.json's ids derive from this tuple
    "<pad>",
    "<eos>",
    "<bos>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
)
TOKEN_ID = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
NAMED_TOKENS = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
CHAT_TEMPLATE_FILE = "chat_template.jinja"
TEXT_PREFIX, VISION_PREFIX, PROJECTOR_PREFIX = "language_model.", "vision_tower.vision_model.", "multi_modal_projector."
TINY_CONFIG: dict[str, Any] = {
    "architectures": ["Gemma3ForConditionalGeneration"],
    "model_type": "gemma3",
    "mm_tokens_per_image": 9,
    "tie_word_embeddings": True,
    "text_config": {
        "model_type": "gemma3_text",
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "query_pre_attn_scalar": 24,
        "hidden_activation": "gelu_pytorch_tanh",
        "rms_norm_eps": 1e-6,
        "sliding_window": 8,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
        "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
        "max_position_embeddings": 2048,
    },
    "vision_config": {
        "model_type": "siglip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 48,
        "patch_size": 8,
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6,
        "vision_use_head": False,
    },
}
IMAGE_PROCESSOR = {  # Gemma 3's own preprocessor_config.json, at the tiny tower's image size
    "image_processor_type": "Gemma3ImageProcessor",
    "processor_class": "Gemma3Processor",
    "do_convert_rgb": None,
    "do_normalize": True,
    "do_pan_and_scan": None,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "pan_and_scan_max_num_crops": None,
    "pan_and_scan_min_crop_size": None,
    "pan_and_scan_min_ratio_to_activate": None,
    "resample": 2,
    "rescale_factor": 1 / 255,
}


def tiny_config(text: Mapping[str, Any] | None = None, vision: Mapping[str, Any] | None = None,
                **top: Any) -> dict[str, Any]:
    """The full config.json of a tiny Gemma 3, with optional text / vision / top-level overrides."""
    config = copy.deepcopy(TINY_CONFIG)
    config["text_config"].update(text or {})
    config["vision_config"].update(vision or {})
    config.update(top)
    ids = {"pad_token_id": TOKEN_ID["<pad>"], "eos_token_id": TOKEN_ID["<eos>"], "bos_token_id": TOKEN_ID["<bos>"]}
    config["text_config"].update(ids)
    return {**config, "boi_token_index": TOKEN_ID["<start_of_image>"], "eoi_token_index": TOKEN_ID["<end_of_image>"],
            "image_token_index": TOKEN_ID["<image_soft_token>"],
            "eos_token_id": [TOKEN_ID["<eos>"], TOKEN_ID["<end_of_turn>"]], "dtype": "float32"}


def _text_shapes(text: Mapping[str, Any], tie: bool) -> Shapes:
    """The Gemma 3 decoder: four norms per layer, QK-norm, no biases."""
    hidden, inter, head_dim = text["hidden_size"], text["intermediate_size"], text["head_dim"]
    q_dim, kv_dim = text["num_attention_heads"] * head_dim, text["num_key_value_heads"] * head_dim
    p = f"{TEXT_PREFIX}model."
    shapes: Shapes = {f"{p}embed_tokens.weight": (text["vocab_size"], hidden), f"{p}norm.weight": (hidden,)}
    if not tie:
        shapes[f"{TEXT_PREFIX}lm_head.weight"] = (text["vocab_size"], hidden)
    for i in range(text["num_hidden_layers"]):
        layer = f"{p}layers.{i}"
        for name in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                     "post_feedforward_layernorm"):
            shapes |= norm(f"{layer}.{name}", hidden, bias=False)
        shapes |= norm(f"{layer}.self_attn.q_norm", head_dim, bias=False)
        shapes |= norm(f"{layer}.self_attn.k_norm", head_dim, bias=False)
        for name, out_dim, in_dim in (("q_proj", q_dim, hidden), ("k_proj", kv_dim, hidden),
                                      ("v_proj", kv_dim, hidden), ("o_proj", hidden, q_dim)):
            shapes |= linear(f"{layer}.self_attn.{name}", out_dim, in_dim, bias=False)
        for name, out_dim, in_dim in (("gate_proj", inter, hidden), ("up_proj", inter, hidden),
                                      ("down_proj", hidden, inter)):
            shapes |= linear(f"{layer}.mlp.{name}", out_dim, in_dim, bias=False)
    return shapes


def _vision_shapes(vision: Mapping[str, Any]) -> Shapes:
    """SigLIP without its pooling head: patch conv (biased), learned positions, blocks, final LayerNorm."""
    width, patch = vision["hidden_size"], vision["patch_size"]
    p = VISION_PREFIX
    shapes: Shapes = {f"{p}embeddings.patch_embedding.weight": (width, 3, patch, patch),
                      f"{p}embeddings.patch_embedding.bias": (width,),
                      f"{p}embeddings.position_embedding.weight": ((vision["image_size"] // patch) ** 2, width)}
    for i in range(vision["num_hidden_layers"]):
        layer = f"{p}encoder.layers.{i}"
        shapes |= norm(f"{layer}.layer_norm1", width, bias=True) | norm(f"{layer}.layer_norm2", width, bias=True)
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes |= linear(f"{layer}.self_attn.{name}", width, width)
        shapes |= linear(f"{layer}.mlp.fc1", vision["intermediate_size"], width)
        shapes |= linear(f"{layer}.mlp.fc2", width, vision["intermediate_size"])
    return shapes | norm(f"{p}post_layernorm", width, bias=True)


def checkpoint_shapes(config: Mapping[str, Any]) -> Shapes:
    width, hidden = config["vision_config"]["hidden_size"], config["text_config"]["hidden_size"]
    projector = {f"{PROJECTOR_PREFIX}mm_input_projection_weight": (width, hidden),
                 f"{PROJECTOR_PREFIX}mm_soft_emb_norm.weight": (width,)}
    return (_text_shapes(config["text_config"], config["tie_word_embeddings"]) | _vision_shapes(config["vision_config"])
            | projector)


def offset_norm(name: str) -> bool:
    """Norms Gemma applies as (1 + w): every RMSNorm of the decoder and the projector's soft-embedding norm."""
    return is_norm_scale(name) and name.startswith((TEXT_PREFIX, PROJECTOR_PREFIX))


def chat_template() -> str:
    """Gemma 3's chat template: an image renders as ``<start_of_image>``, which the processor expands."""
    return resources.files("jaxprobe.families.gemma3").joinpath(CHAT_TEMPLATE_FILE).read_text()


def write_tiny_checkpoint(model_type: str, out_dir: str | Path, seed: int = 0, text: Mapping[str, Any] | None = None,
                          vision: Mapping[str, Any] | None = None) -> Path:
    """Write a tiny random checkpoint (config, safetensors, tokenizer, processor files) into ``out_dir``."""
    if model_type != "gemma3":
        raise CheckpointError(f"no tiny gemma3 checkpoint for model_type {model_type!r}; choose 'gemma3'")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = tiny_config(text, vision)
    tensors = random_tensors(checkpoint_shapes(config), seed)
    for name in filter(offset_norm, tensors):
        tensors[name] -= 1.0  # random_tensors centres norm scales on 1; Gemma stores the offset from 1
    save_file(tensors, out_dir / SINGLE_FILE, metadata={"format": "pt"})
    write_json(out_dir / "config.json", config)
    size = config["vision_config"]["image_size"]
    write_json(out_dir / "preprocessor_config.json", {**IMAGE_PROCESSOR, "size": {"height": size, "width": size},
                                                      "image_seq_length": config["mm_tokens_per_image"]})
    write_json(out_dir / "processor_config.json", {"processor_class": "Gemma3Processor",
                                                   "image_seq_length": config["mm_tokens_per_image"]})
    generation = {"bos_token_id": TOKEN_ID["<bos>"], "eos_token_id": config["eos_token_id"],
                  "pad_token_id": TOKEN_ID["<pad>"]}
    write_json(out_dir / "generation_config.json", generation)
    write_tokenizer(out_dir, SPECIAL_TOKENS, eos="<eos>", pad="<pad>", chat_template=chat_template(), bos="<bos>",
                    named_tokens=NAMED_TOKENS)
    return out_dir
