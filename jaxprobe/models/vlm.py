"""``VisionLanguageModel``: vision tower -> connector -> decoder, with every site sown.

Sown (collection ``intermediates``): ``vision.layers`` [L_v, B, N, D_v], ``connector.output`` [B, I, D] (the image
embeddings the LLM receives, in image order) and ``llm.layers`` [L, B, T, D]. A ``RunPlan`` says how far the
forward goes: the first k vision blocks only, through the connector, the first k decoder layers, or all of it with
logits at the answer position.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprobe.models.config import RunPlan, VLMConfig
from jaxprobe.models.connectors.patch_merger import PatchMerger
from jaxprobe.models.decoders.decoder import Decoder
from jaxprobe.models.inputs import ModelInputs
from jaxprobe.models.towers.qwen_vit import QwenVisionTower

TOWERS = {"qwen_vit": QwenVisionTower}
CONNECTORS = {"patch_merger": PatchMerger}


def scatter_image_embeddings(embeds: jax.Array, image_embeds: jax.Array, image_mask: jax.Array) -> jax.Array:
    """Put image embedding k of row b at row b's k-th image token (every row has the same number of them)."""
    slot = jnp.clip(jnp.cumsum(image_mask, axis=1) - 1, 0, image_embeds.shape[1] - 1)
    gathered = jnp.take_along_axis(image_embeds, slot[..., None], axis=1)
    return jnp.where(image_mask[..., None], gathered.astype(embeds.dtype), embeds)


class VisionLanguageModel(nn.Module):
    config: VLMConfig
    plan: RunPlan
    dtype: Any = jnp.float32  # activations (params keep the dtype they were loaded in)

    @nn.compact
    def __call__(self, inputs: ModelInputs, all_logits: bool = False) -> jax.Array | None:
        """Logits [B, V] at each row's ``last_index`` (``all_logits``: [B, T, V]) when the plan asks for them."""
        c, plan = self.config, self.plan
        tower = TOWERS[c.vision.tower](c.vision, inputs.image_grid, plan.vision_layers, c.remat, name="vision")
        features = tower(inputs.pixels.astype(self.dtype))
        if not plan.connector:
            return None
        image_embeds = CONNECTORS[c.connector.kind](c.connector, name="connector")(features)
        self.sow("intermediates", "connector.output", image_embeds)
        if not plan.text_layers:
            return None
        decoder = Decoder(c.text, plan.text_layers, c.remat, name="decoder")
        embeds = scatter_image_embeddings(decoder.embed(inputs.input_ids).astype(self.dtype), image_embeds,
                                          inputs.image_mask)
        hidden = decoder(embeds, inputs.attention_mask, inputs.positions)
        if all_logits:
            return decoder.logits(hidden)
        if not plan.logits:
            return None
        last = jnp.take_along_axis(hidden, inputs.last_index[:, None, None], axis=1)[:, 0]
        return decoder.logits(last)
