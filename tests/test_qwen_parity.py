"""Our Flax Qwen2-VL / Qwen2.5-VL against transformers' PyTorch models on identical inputs (1e-4, float32)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxprobe.models.registry import load_model
from jaxprobe.models.rope_index import rope_index
from tests.hf_tiny import IMAGE, inputs, save_tiny, text_config

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
}


def _torch_reference(model, batch):
    """Vision block outputs, merger output, decoder layer outputs and logits from transformers."""
    captured = {}
    hooks = [block.register_forward_hook(lambda m, a, out, i=i: captured.__setitem__(f"vision{i}", out))
             for i, block in enumerate(model.model.visual.blocks)]
    hooks += [layer.register_forward_hook(lambda m, a, out, i=i: captured.__setitem__(f"llm{i}", out))
              for i, layer in enumerate(model.model.language_model.layers)]
    tensors = {k: torch.from_numpy(v) for k, v in batch.items()}
    with torch.no_grad():
        logits = model(**tensors).logits
        merged = model.model.get_image_features(tensors["pixel_values"], tensors["image_grid_thw"]).pooler_output
    for hook in hooks:
        hook.remove()
    out = {k: (v[0] if isinstance(v, tuple) else v).numpy() for k, v in captured.items()}
    out["merged"] = torch.cat(list(merged)).numpy()
    out["logits"] = logits.numpy()
    return out


def _ours(loaded, batch):
    grid = tuple(int(g) for g in batch["image_grid_thw"][0])
    images = len(batch["image_grid_thw"])
    pixels = batch["pixel_values"].reshape(images, -1, batch["pixel_values"].shape[-1])
    positions = rope_index(batch["input_ids"], batch["attention_mask"], batch["image_grid_thw"], IMAGE,
                           loaded.config.vision.merge_size)
    model = loaded.module(grid)
    logits, state = jax.jit(lambda p: model.apply({"params": p}, jnp.asarray(batch["input_ids"]),
                                                  jnp.asarray(batch["attention_mask"]), jnp.asarray(positions),
                                                  jnp.asarray(pixels), mutable=["intermediates"]))(loaded.params)
    sown = {k: np.asarray(v[0]) for k, v in state["intermediates"]["visual"].items()}
    sown.update({k: np.asarray(v[0]) for k, v in state["intermediates"]["model"].items()})
    return np.asarray(logits), sown


@pytest.mark.parametrize("case", list(CASES))
def test_parity(tmp_path, case):
    family, text, vision, grid_hw, extra = CASES[case]
    directory = save_tiny(family, tmp_path / "ckpt", text, vision)
    batch = inputs(vision, grid_hw, **extra)
    from transformers import AutoModelForImageTextToText

    reference = _torch_reference(AutoModelForImageTextToText.from_pretrained(directory).eval(), batch)
    logits, sown = _ours(load_model(directory), batch)
    vision_sites = sorted(k for k in sown if k.startswith("vision."))
    llm_sites = sorted(k for k in sown if k.startswith("llm."))
    assert len(vision_sites) == vision["depth"] and len(llm_sites) == text["num_hidden_layers"]
    for i, site in enumerate(vision_sites):
        np.testing.assert_allclose(sown[site].reshape(reference[f"vision{i}"].shape), reference[f"vision{i}"],
                                   atol=ATOL, err_msg=site)
    connector = sown["connector.output"]
    np.testing.assert_allclose(connector.reshape(reference["merged"].shape), reference["merged"], atol=ATOL)
    valid = batch["attention_mask"].astype(bool)
    for i, site in enumerate(llm_sites):
        np.testing.assert_allclose(sown[site][valid], reference[f"llm{i}"][valid], atol=ATOL, err_msg=site)
    np.testing.assert_allclose(logits[valid], reference["logits"][valid], atol=ATOL)
