"""Tiny random Qwen-VL models written by transformers (PyTorch) and inputs for them, for parity tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

VOCAB, IMAGE, VIDEO, START, END = 1024, 1020, 1021, 1018, 1019
INIT_STD = 0.1  # outputs must depend on the input for parity to mean anything (hf_keys.md)


def text_config(heads: int = 4, kv_heads: int = 2, hidden: int = 64, tie: bool = False) -> dict:
    head_dim = hidden // heads
    quarter = head_dim // 2
    section = [quarter - 2 * (quarter // 3), quarter // 3, quarter // 3]
    return dict(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=512,
                tie_word_embeddings=tie, initializer_range=INIT_STD,
                rope_parameters=dict(rope_type="default", mrope_section=section, rope_theta=1e4))


def save_tiny(family: str, out: Path, text: dict, vision: dict, dtype: str = "float32", seed: int = 0) -> Path:
    """Build a random model from config classes, save it with ``save_pretrained``, return the directory."""
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )

    torch.manual_seed(seed)
    config_cls, model_cls = ((Qwen2VLConfig, Qwen2VLForConditionalGeneration) if family == "qwen2_vl"
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


def inputs(vision: dict, grid_hw: tuple[int, int], batch: int = 1, text_before: int = 5, text_after: int = 4,
           seed: int = 0, pad: int = 0) -> dict[str, np.ndarray]:
    """Processor-like inputs: pixel patches [B*N, C*T*P*P], grids, ids with image tokens, right padding."""
    rng = np.random.default_rng(seed)
    h, w = grid_hw
    merge = vision["spatial_merge_size"]
    patch_dim = 3 * vision["temporal_patch_size"] * vision["patch_size"] ** 2
    tokens = h * w // merge**2
    pixels = rng.normal(size=(batch * h * w, patch_dim)).astype(np.float32)
    rows = []
    for _ in range(batch):
        before, after = rng.integers(0, START, text_before), rng.integers(0, START, text_after)
        rows.append(np.concatenate([before, [START], [IMAGE] * tokens, [END], after, np.zeros(pad, int)]))
    ids = np.stack(rows).astype(np.int64)
    mask = np.ones_like(ids)
    if pad:
        mask[:, -pad:] = 0
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels,
            "image_grid_thw": np.array([[1, h, w]] * batch), "mm_token_type_ids": (ids == IMAGE).astype(np.int64)}
