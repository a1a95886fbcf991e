"""The shared ViT tower against transformers' CLIP and SigLIP vision models, block by block, and the connector
input each VLM reads (LLaVA: block -2 without CLS; Gemma 3: the post-LayerNorm output)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from jaxprobe.families.vit_keys import vit_rules
from jaxprobe.models.config import VisionConfig
from jaxprobe.models.towers.vit import ViTTower
from jaxprobe.weights.loader import load_params
from jaxprobe.weights.rules import RuleKeyMap

SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=32,
             patch_size=8, initializer_range=0.1)
CASES = {
    "clip-layer-2": (transformers.CLIPVisionModel, transformers.CLIPVisionConfig, dict(SIZES, projection_dim=32),
                     dict(class_token=True, patch_bias=False, pre_norm=True, feature_layer=-2, drop_cls=True)),
    "siglip-post-norm": (transformers.SiglipVisionModel, transformers.SiglipVisionConfig,
                         dict(SIZES, hidden_act="gelu_pytorch_tanh"), dict(post_norm=True)),
}


class Tower(nn.Module):
    config: VisionConfig

    @nn.compact
    def __call__(self, pixels):
        return ViTTower(self.config, self.config.depth, name="vision")(pixels, (1, 4, 4))


@pytest.mark.parametrize("case", list(CASES))
def test_blocks_and_connector_input_match_transformers(tmp_path, case):
    model_class, config_class, values, flags = CASES[case]
    torch.manual_seed(0)
    reference = model_class(config_class(**values)).eval()
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.add_(torch.randn_like(param) * 0.1)
    reference.save_pretrained(tmp_path)
    hf = reference.config
    config = VisionConfig(tower="vit", depth=hf.num_hidden_layers, hidden_size=hf.hidden_size,
                          num_heads=hf.num_attention_heads, intermediate_size=hf.intermediate_size,
                          hidden_act=hf.hidden_act, patch_size=hf.patch_size, image_size=hf.image_size,
                          norm_eps=hf.layer_norm_eps, **flags)
    pixels = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        out = reference(pixel_values=torch.from_numpy(pixels), output_hidden_states=True)
    model = Tower(config)
    abstract = jax.eval_shape(model.init, jax.random.key(0), pixels)["params"]
    params = load_params(tmp_path, RuleKeyMap(vit_rules("", config.post_norm)), abstract)
    features, state = model.apply({"params": params}, jnp.asarray(pixels), mutable=["intermediates"])
    sown = np.asarray(state["intermediates"]["vision"]["blocks"]["vision.layers"][0])
    for layer in range(config.depth):
        np.testing.assert_allclose(sown[layer], out.hidden_states[layer + 1].numpy(), atol=1e-4, err_msg=str(layer))
    expected = out.hidden_states[-2].numpy()[:, 1:] if case.startswith("clip") else out.last_hidden_state.numpy()
    np.testing.assert_allclose(np.asarray(features), expected, atol=1e-4)
