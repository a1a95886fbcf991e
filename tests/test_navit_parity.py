"""The NaViT tower (SigLIP blocks + 2-D rotary, ``towers/navit.py``) against transformers' VideoLLaMA3 vision model
on two images of different grids packed into one call: transformers attends block-diagonally per image
(``cu_seqlens``), ours one image per batch row, and every block's output and the final LayerNorm agree."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from jaxprobe.families.vit_keys import vit_rules
from jaxprobe.models.config import VisionConfig
from jaxprobe.models.towers.navit import NaViTTower
from jaxprobe.weights.loader import load_params
from jaxprobe.weights.rules import RuleKeyMap

GRIDS = ((1, 3, 5), (1, 4, 2))  # non-square, and different per image


class Tower(nn.Module):
    config: VisionConfig
    grid: tuple[int, int, int]

    @nn.compact
    def __call__(self, pixels):
        return NaViTTower(self.config, self.config.depth, name="vision")(pixels, self.grid)


def test_blocks_and_output_match_transformers_on_packed_images_of_two_grids(tmp_path):
    hf = transformers.VideoLlama3VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                              num_attention_heads=4, patch_size=8, layer_norm_eps=1e-5,
                                              rope_parameters={"rope_type": "axial", "rope_theta": 10000.0})
    torch.manual_seed(0)
    reference = transformers.VideoLlama3VisionModel(hf).eval()
    with torch.no_grad():
        for name, param in reference.named_parameters():
            noise = torch.randn_like(param) * 0.1
            param.copy_(noise + 1 if "norm" in name and name.endswith("weight") else noise)
    reference.save_pretrained(tmp_path)
    rng = np.random.default_rng(0)
    patches = [rng.normal(size=(g[1] * g[2], 3 * 8 * 8)).astype(np.float32) for g in GRIDS]
    captured = []
    hooks = [layer.register_forward_hook(lambda m, a, out: captured.append(out[0] if isinstance(out, tuple) else out))
             for layer in reference.encoder.layers]
    with torch.no_grad():
        out = reference(pixel_values=torch.from_numpy(np.concatenate(patches)),
                        grid_thw=torch.tensor(GRIDS), merge_sizes=torch.ones(len(GRIDS), dtype=torch.long))
    for hook in hooks:
        hook.remove()
    config = VisionConfig(tower="navit", depth=3, hidden_size=32, num_heads=4, intermediate_size=64,
                          hidden_act=hf.hidden_act, patch_size=8, norm_eps=1e-5, post_norm=True)
    keymap = RuleKeyMap(vit_rules("", post_norm=True))
    start = 0
    for grid, pixels in zip(GRIDS, patches, strict=True):
        model = Tower(config, grid)
        abstract = jax.eval_shape(model.init, jax.random.key(0), pixels[None])["params"]
        params = load_params(tmp_path, keymap, abstract)
        features, state = model.apply({"params": params}, jnp.asarray(pixels[None]), mutable=["intermediates"])
        sown = np.asarray(state["intermediates"]["vision"]["blocks"]["vision.layers"][0])
        rows = slice(start, start + len(pixels))
        for layer in range(config.depth):
            np.testing.assert_allclose(sown[layer, 0], captured[layer][rows].numpy(), atol=1e-5,
                                       err_msg=f"grid {grid} block {layer}")
        np.testing.assert_allclose(np.asarray(features[0]), out.last_hidden_state[rows].numpy(), atol=1e-5)
        start += len(pixels)
