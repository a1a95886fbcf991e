"""Our Flax Qwen2-VL / Qwen2.5-VL against transformers' PyTorch models on identical inputs (1e-4, float32)."""

from __future__ import annotations

import pytest

from jaxprobe.models.registry import load_model
from jaxprobe.parity import compare, jax_forward, run_parity, torch_forward
from jaxprobe.weights.tiny import write_tiny_checkpoint
from tests.hf_tiny import inputs, save_tiny, text_config

ATOL = 1e-4
QWEN2_VISION = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4, mlp_ratio=2, patch_size=8,
                    spatial_merge_size=2, temporal_patch_size=2)
QWEN25_VISION = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64, patch_size=8,
                     spatial_merge_size=2, temporal_patch_size=2, window_size=32, fullatt_block_indexes=[1])

CASES = {
    "qwen2_vl-gqa2-square": ("qwen2_vl", text_config(), QWEN2_VISION, (4, 4), {}),
    "qwen2_vl-mqa-tied-wide": ("qwen2_vl", text_config(kv_heads=1, tie=True), QWEN2_VISION, (4, 6), {}),
    "qwen2_5_vl-window-pad": ("qwen2_5_vl", text_config(), QWEN25_VISION, (6, 10), {}),
    "qwen2_5_vl-mha-fullatt02-hd8": ("qwen2_5_vl", text_config(heads=8, kv_heads=8),
                                     dict(QWEN25_VISION, fullatt_block_indexes=[0, 2], window_size=16), (4, 8), {}),
    "qwen2_5_vl-batch2-padded": ("qwen2_5_vl", text_config(kv_heads=1), QWEN25_VISION, (4, 4),
                                 {"batch": 2, "pad": 3}),
    "qwen2_vl-bfloat16-checkpoint": ("qwen2_vl", text_config(), QWEN2_VISION, (4, 4), {}, "bfloat16"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_parity(tmp_path, case):
    family, text, vision, grid_hw, extra, *dtype = CASES[case]
    directory = save_tiny(family, tmp_path / "ckpt", text, vision, dtype=dtype[0] if dtype else "float32")
    batch = inputs(vision, grid_hw, **extra)
    from transformers import AutoModelForImageTextToText

    # a bfloat16 checkpoint is compared in float32 on both sides, on the same bf16-rounded weights
    reference_model = AutoModelForImageTextToText.from_pretrained(directory, dtype="float32").eval()
    reference = torch_forward(reference_model, batch)
    ours = jax_forward(load_model(directory), batch)
    sown = ours[1]
    assert len([k for k in sown if k.startswith("vision.")]) == vision["depth"]
    assert len([k for k in sown if k.startswith("llm.")]) == text["num_hidden_layers"]
    diffs, kl = compare(ours, reference, batch["attention_mask"])
    assert len(diffs) == vision["depth"] + text["num_hidden_layers"] + 2
    assert max(diffs.values()) <= ATOL, diffs
    assert kl < 1e-6


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_parity_on_jaxprobe_tiny_checkpoints(tmp_path, family):
    """`jaxprobe tiny-checkpoint` output, processed by its own tokenizer and image processor, round trip."""
    report = run_parity(write_tiny_checkpoint(family, tmp_path, seed=3))
    assert report.passed, report.table()
    assert len(report.max_abs) == 2 + 2 + 1 + 1  # 2 vision blocks, 2 decoder layers, connector, logits
