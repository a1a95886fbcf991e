"""Tiny random checkpoints in HuggingFace format, written offline and without torch.

The demo, the tests and the benchmarks need a real-looking checkpoint directory (config.json, safetensors named
exactly as transformers' ``save_pretrained`` names them, a tokenizer with the family's special tokens and chat
template, the image processor config) that transformers itself can load, so our loader is exercised on the same
layout as a Hub download. Sizes are data (one dict per family) and can be overridden, e.g. to make the
few-hundred-MB checkpoint of the memory benchmark.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from jaxprobe.errors import CheckpointError
from jaxprobe.weights.reader import SINGLE_FILE

Shapes = dict[str, tuple[int, ...]]

INIT_STD = 0.1  # not HF's 0.02: a tiny random Qwen-VL then predicts the same token whatever the image
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
TOKENIZER_VOCAB = 448  # byte alphabet (256) + specials + merges learned from the corpus
CHAT_TEMPLATE_FILE = "qwen_vl_chat_template.jinja"
CORPUS = (
    "The image shows a chest x-ray with no sign of pneumonia. A benign lesion is visible in the breast "
    "ultrasound; the malignant tumour has irregular margins. Normal lung tissue, covid infiltrates, "
    "pleural effusion, cardiomegaly, nodule, mass, atelectasis, consolidation, edema, emphysema, fibrosis. "
    "Dermatology: melanoma, nevus, basal cell carcinoma, keratosis. Pathology: adipose, background, debris, "
    "lymphocytes, mucus, smooth muscle, colon mucosa, stroma, adenocarcinoma epithelium. Retina: diabetic "
    "retinopathy, drusen, choroidal neovascularization. Blood cells: neutrophil, eosinophil, basophil, "
    "monocyte, platelet, erythroblast. Organ: liver, kidney, spleen, pancreas, bladder, femur, heart. "
    "Question: which class best describes this image? Answer with one word. A B C D yes no"
)

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
FAMILIES: dict[str, dict[str, Any]] = {
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


def family_config(family: str, text: Mapping[str, Any] | None = None, vision: Mapping[str, Any] | None = None) -> dict:
    """The full config.json of a tiny ``family`` model, with optional text/vision size overrides."""
    if family not in FAMILIES:
        raise CheckpointError(f"unknown tiny-checkpoint family {family!r}; choose one of {sorted(FAMILIES)}")
    spec = copy.deepcopy(FAMILIES[family])
    spec["text_config"].update(text or {})
    spec["vision_config"].update(vision or {})
    text_hidden = spec["text_config"]["hidden_size"]
    out_key = "out_hidden_size" if family == "qwen2_5_vl" else "hidden_size"
    if out_key not in (vision or {}):
        spec["vision_config"][out_key] = text_hidden  # the merger must emit the LLM's width
    return {
        "model_type": family,
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


def _linear(prefix: str, out_dim: int, in_dim: int, bias: bool = True) -> Shapes:
    """torch ``nn.Linear`` tensors: weight [out, in] (+ bias [out])."""
    shapes = {f"{prefix}.weight": (out_dim, in_dim)}
    if bias:
        shapes[f"{prefix}.bias"] = (out_dim,)
    return shapes


def _norm(prefix: str, dim: int, bias: bool) -> Shapes:
    """LayerNorm (weight + bias) or RMSNorm (weight only)."""
    return {f"{prefix}.weight": (dim,), **({f"{prefix}.bias": (dim,)} if bias else {})}


def _text_shapes(text: Mapping[str, Any]) -> Shapes:
    """The Qwen2 decoder under the legacy ``model.*`` / ``lm_head`` names that save_pretrained writes."""
    hidden, inter, vocab = text["hidden_size"], text["intermediate_size"], text["vocab_size"]
    head_dim = text.get("head_dim") or hidden // text["num_attention_heads"]
    q_dim, kv_dim = text["num_attention_heads"] * head_dim, text["num_key_value_heads"] * head_dim
    shapes: Shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    if not text["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (vocab, hidden)
    for i in range(text["num_hidden_layers"]):
        p = f"model.layers.{i}"
        shapes |= _norm(f"{p}.input_layernorm", hidden, bias=False)
        shapes |= _norm(f"{p}.post_attention_layernorm", hidden, bias=False)
        shapes |= _linear(f"{p}.self_attn.q_proj", q_dim, hidden)
        shapes |= _linear(f"{p}.self_attn.k_proj", kv_dim, hidden)
        shapes |= _linear(f"{p}.self_attn.v_proj", kv_dim, hidden)
        shapes |= _linear(f"{p}.self_attn.o_proj", hidden, q_dim, bias=False)
        shapes |= _linear(f"{p}.mlp.gate_proj", inter, hidden, bias=False)
        shapes |= _linear(f"{p}.mlp.up_proj", inter, hidden, bias=False)
        shapes |= _linear(f"{p}.mlp.down_proj", hidden, inter, bias=False)
    return shapes


def _vision_shapes(
    vision: Mapping[str, Any], width: int, out_dim: int, block_mlp: Callable[[str], Shapes], layer_norm: bool
) -> Shapes:
    """Patch embedding (Conv3d, no bias), blocks and patch merger shared by both Qwen-VL vision towers."""
    merged = width * vision["spatial_merge_size"] ** 2
    patch = (width, vision["in_channels"], vision["temporal_patch_size"], vision["patch_size"], vision["patch_size"])
    shapes: Shapes = {"visual.patch_embed.proj.weight": patch}
    for i in range(vision["depth"]):
        p = f"visual.blocks.{i}"
        shapes |= _norm(f"{p}.norm1", width, bias=layer_norm)
        shapes |= _norm(f"{p}.norm2", width, bias=layer_norm)
        shapes |= _linear(f"{p}.attn.qkv", 3 * width, width)
        shapes |= _linear(f"{p}.attn.proj", width, width)
        shapes |= block_mlp(f"{p}.mlp")
    shapes |= _norm("visual.merger.ln_q", width, bias=layer_norm)
    shapes |= _linear("visual.merger.mlp.0", merged, merged)
    shapes |= _linear("visual.merger.mlp.2", out_dim, merged)
    return shapes


def qwen2_vl_shapes(config: Mapping[str, Any]) -> Shapes:
    """Qwen2-VL: LayerNorm blocks with a quick-GELU fc1/fc2 MLP."""
    v = config["vision_config"]
    width, inner = v["embed_dim"], v["embed_dim"] * v["mlp_ratio"]

    def mlp(p: str) -> Shapes:
        return _linear(f"{p}.fc1", inner, width) | _linear(f"{p}.fc2", width, inner)

    return _text_shapes(config["text_config"]) | _vision_shapes(v, width, v["hidden_size"], mlp, layer_norm=True)


def qwen2_5_vl_shapes(config: Mapping[str, Any]) -> Shapes:
    """Qwen2.5-VL: RMSNorm blocks with a gated SiLU MLP (all projections biased)."""
    v = config["vision_config"]
    width, inner = v["hidden_size"], v["intermediate_size"]

    def mlp(p: str) -> Shapes:
        return (
            _linear(f"{p}.gate_proj", inner, width)
            | _linear(f"{p}.up_proj", inner, width)
            | _linear(f"{p}.down_proj", width, inner)
        )

    return _text_shapes(config["text_config"]) | _vision_shapes(v, width, v["out_hidden_size"], mlp, layer_norm=False)


SHAPES: dict[str, Callable[[Mapping[str, Any]], Shapes]] = {
    "qwen2_vl": qwen2_vl_shapes,
    "qwen2_5_vl": qwen2_5_vl_shapes,
}


def _is_norm_scale(name: str) -> bool:
    return name.endswith(".weight") and any(k in name for k in ("norm", "ln_q"))


def random_tensors(shapes: Shapes, seed: int) -> dict[str, np.ndarray]:
    """float32 N(0, INIT_STD) tensors; norm scales around 1 so activations neither vanish nor explode."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for name in sorted(shapes):
        value = rng.normal(0.0, INIT_STD, size=shapes[name]).astype(np.float32)
        tensors[name] = value + np.float32(1.0) if _is_norm_scale(name) else value
    return tensors


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
    return resources.files("jaxprobe.weights").joinpath(CHAT_TEMPLATE_FILE).read_text()


def write_tokenizer(out_dir: Path) -> None:
    """A byte-level BPE trained on a small medical corpus, with the Qwen special tokens at fixed ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([CORPUS], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in ("<|im_end|>", "<|endoftext|>")],
    )
    fast.chat_template = chat_template()
    fast.save_pretrained(out_dir)


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_tiny_checkpoint(
    family: str,
    out_dir: str | Path,
    seed: int = 0,
    text: Mapping[str, Any] | None = None,
    vision: Mapping[str, Any] | None = None,
) -> Path:
    """Write a tiny random ``family`` checkpoint (config, safetensors, tokenizer, processor) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = family_config(family, text, vision)
    tensors = random_tensors(SHAPES[family](config), seed)
    save_file(tensors, out_dir / SINGLE_FILE, metadata={"format": "pt"})
    del tensors
    _write_json(out_dir / "config.json", config)
    _write_json(out_dir / "preprocessor_config.json", image_processor_config(config))
    _write_json(out_dir / "generation_config.json", {k: config[k] for k in ("bos_token_id", "eos_token_id")})
    write_tokenizer(out_dir)
    return out_dir
