"""Conformance cases of the qwen_vl family: tiny Qwen2-VL / Qwen2.5-VL models written by transformers (PyTorch)
with unusual shapes, and processor-like inputs for them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxprobe.families.base import ModelInputs, last_token_index
from jaxprobe.families.qwen_vl.processor import rope_index

FAMILY = "qwen_vl"
VOCAB, IMAGE, VIDEO, START, END = 1024, 1020, 1021, 1018, 1019
INIT_STD = 0.1  # outputs must depend on the input for parity to mean anything (hf_keys.md)
QWEN2_VISION = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4, mlp_ratio=2, patch_size=8,
                    spatial_merge_size=2, temporal_patch_size=2)
QWEN25_VISION = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64, patch_size=8,
                     spatial_merge_size=2, temporal_patch_size=2, window_size=32, fullatt_block_indexes=[1])


def text_config(heads: int = 4, kv_heads: int = 2, hidden: int = 64, tie: bool = False, layers: int = 2) -> dict:
    head_dim = hidden // heads
    quarter = head_dim // 2
    section = [quarter - 2 * (quarter // 3), quarter // 3, quarter // 3]
    return dict(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=512,
                tie_word_embeddings=tie, initializer_range=INIT_STD,
                rope_parameters=dict(rope_type="default", mrope_section=section, rope_theta=1e4))


# name -> (model_type, text config, vision config, patch grid (h, w), input options, checkpoint dtype)
CASES = {
    "qwen2_vl-gqa2-square": ("qwen2_vl", text_config(), QWEN2_VISION, (4, 4), {}, "float32"),
    "qwen2_vl-mqa-tied-wide": ("qwen2_vl", text_config(kv_heads=1, tie=True), QWEN2_VISION, (4, 6), {}, "float32"),
    "qwen2_5_vl-window-pad": ("qwen2_5_vl", text_config(), QWEN25_VISION, (6, 10), {}, "float32"),
    "qwen2_5_vl-mha-fullatt02-hd8": ("qwen2_5_vl", text_config(heads=8, kv_heads=8),
                                     dict(QWEN25_VISION, fullatt_block_indexes=[0, 2], window_size=16), (4, 8), {},
                                     "float32"),
    "qwen2_5_vl-batch2-right-padded": ("qwen2_5_vl", text_config(kv_heads=1, layers=3), QWEN25_VISION, (4, 4),
                                       {"batch": 2, "pad": 3}, "float32"),
    "qwen2_5_vl-batch3-left-padded-lengths": ("qwen2_5_vl", text_config(), QWEN25_VISION, (4, 4),
                                              {"batch": 3, "pad": 4, "left": True}, "float32"),
    "qwen2_vl-bfloat16-checkpoint": ("qwen2_vl", text_config(), QWEN2_VISION, (4, 4), {}, "bfloat16"),
}


def save_reference(model_type: str, out: Path, text: dict, vision: dict, dtype: str = "float32",
                   seed: int = 0) -> Path:
    """Build a random model from transformers' config classes and ``save_pretrained`` it."""
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )

    torch.manual_seed(seed)
    config_cls, model_cls = ((Qwen2VLConfig, Qwen2VLForConditionalGeneration) if model_type == "qwen2_vl"
                             else (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration))
    config = config_cls(text_config=text, vision_config=dict(vision, initializer_range=INIT_STD),
                        image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=START,
                        vision_end_token_id=END, tie_word_embeddings=text["tie_word_embeddings"],
                        initializer_range=INIT_STD)
    model = model_cls(config).eval()
    with torch.no_grad():  # norms start at 1 and biases at 0; perturb them so their mapping is tested too
        for name, param in model.named_parameters():
            if "norm" in name or "ln_q" in name or name.endswith("bias"):
                param.add_(torch.randn_like(param) * INIT_STD)
    model.to(getattr(torch, dtype)).save_pretrained(out)
    return out


def random_inputs(vision: dict, grid_hw: tuple[int, int], batch: int = 1, seed: int = 0, pad: int = 0,
                  left: bool = False) -> ModelInputs:
    """Processor-like inputs: patches, ids with one image span per row. With ``left``, rows have different prompt
    lengths (row k is ``k * pad`` tokens shorter), padded on the left as batched generation does."""
    rng = np.random.default_rng(seed)
    h, w = grid_hw
    merge = vision["spatial_merge_size"]
    patch_dim = 3 * vision["temporal_patch_size"] * vision["patch_size"] ** 2
    tokens = h * w // merge**2
    rows = []
    for k in range(batch):
        before, after = rng.integers(0, START, 5), rng.integers(0, START, 6 + batch * pad)
        kept = len(after) - (k * pad if left else batch * pad)
        rows.append(np.concatenate([before, [START], [IMAGE] * tokens, [END], after[:kept]]))
    width = max(len(r) for r in rows) + (0 if left else pad)
    ids = np.zeros((batch, width), int)
    mask = np.zeros((batch, width), int)
    for k, row in enumerate(rows):
        place = slice(width - len(row), width) if left else slice(0, len(row))
        ids[k, place], mask[k, place] = row, 1
    ids, mask = ids.astype(np.int32), mask.astype(np.int32)
    return ModelInputs(input_ids=ids, attention_mask=mask,
                       positions=rope_index(ids, mask, (1, h, w), IMAGE, merge).astype(np.int32),
                       pixels=rng.normal(size=(batch, h * w, patch_dim)).astype(np.float32),
                       image_mask=ids == IMAGE, last_index=last_token_index(mask), image_grid=(1, h, w))


def build(case: str, tmp_path: Path) -> tuple[Path, ModelInputs]:
    """A transformers-written checkpoint and inputs for one conformance case."""
    model_type, text, vision, grid, options, dtype = CASES[case]
    directory = save_reference(model_type, tmp_path / "ckpt", text, vision, dtype=dtype)
    return directory, random_inputs(vision, grid, **options)


def depths(case: str) -> tuple[int, int]:
    """(vision blocks, decoder layers) of a case."""
    _, text, vision, *_ = CASES[case]
    return vision["depth"], text["num_hidden_layers"]
