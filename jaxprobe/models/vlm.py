"""``VisionLanguageModel``: vision tower -> connector -> decoder, with every site sown, and cached decoding.

Sown (collection ``intermediates``): ``vision.layers`` [L_v, B, N, D_v], ``connector.output`` [B, I, D] (the image
embeddings the LLM receives, in image order) and ``llm.layers`` [L, B, T, D]. A ``RunPlan`` says how far the
forward goes: the first k vision blocks only, through the connector, the first k decoder layers, or all of it with
logits at the answer position. ``prefill`` and ``decode`` run the same model with a key/value cache (``cache``
collection) for generation.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprobe.models.config import RunPlan, VLMConfig
from jaxprobe.models.connectors.avg_pool import AvgPoolProjector
from jaxprobe.models.connectors.mlp import MLPProjector
from jaxprobe.models.connectors.patch_merger import PatchMerger
from jaxprobe.models.decoders.decoder import Attend, Decoder, image_groups
from jaxprobe.models.inputs import ModelInputs
from jaxprobe.models.towers.navit import NaViTTower
from jaxprobe.models.towers.qwen_vit import QwenVisionTower
from jaxprobe.models.towers.vit import ViTTower

TOWERS = {"qwen_vit": QwenVisionTower, "vit": ViTTower, "navit": NaViTTower}
CONNECTORS = {"patch_merger": PatchMerger, "mlp2x_gelu": MLPProjector, "avg_pool": AvgPoolProjector}


def scatter_image_embeddings(embeds: jax.Array, image_embeds: jax.Array, image_mask: jax.Array) -> jax.Array:
    """Put image embedding k of row b at row b's k-th image token (every row has the same number of them)."""
    slot = jnp.clip(jnp.cumsum(image_mask, axis=1) - 1, 0, image_embeds.shape[1] - 1)
    gathered = jnp.take_along_axis(image_embeds, slot[..., None], axis=1)
    return jnp.where(image_mask[..., None], gathered.astype(embeds.dtype), embeds)


def at_rows(hidden: jax.Array, index: jax.Array) -> jax.Array:
    """hidden[b, index[b]] for [B, T, D] hidden states: [B, D]."""
    return jnp.take_along_axis(hidden, index[:, None, None], axis=1)[:, 0]


class VisionLanguageModel(nn.Module):
    config: VLMConfig
    plan: RunPlan
    dtype: Any = jnp.float32  # activations (params keep the dtype they were loaded in)

    def setup(self):
        c, plan = self.config, self.plan
        self.vision = TOWERS[c.vision.tower](c.vision, plan.vision_layers, c.remat)
        if plan.connector:
            self.connector = CONNECTORS[c.connector.kind](c.connector)
        if plan.text_layers:
            self.decoder = Decoder(c.text, plan.text_layers, c.remat)

    def _prompt_embeddings(self, inputs: ModelInputs) -> jax.Array | None:
        """Token embeddings with the image tokens replaced by the connector's output (None: plan stops before)."""
        features = self.vision(inputs.pixels.astype(self.dtype), inputs.image_grid)
        if not self.plan.connector:
            return None
        image_embeds = self.connector(features)
        self.sow("intermediates", "connector.output", image_embeds)
        if not self.plan.text_layers:
            return None
        embeds = self.decoder.embed(inputs.input_ids).astype(self.dtype)
        return scatter_image_embeddings(embeds, image_embeds, inputs.image_mask)

    def _groups(self, inputs: ModelInputs, size: int) -> jax.Array | None:
        """Image ids of the prompt's tokens padded to ``size`` slots, where images attend bidirectionally."""
        if not self.config.text.bidirectional_image_attention:
            return None
        groups = image_groups(inputs.image_mask)
        return jnp.pad(groups, ((0, 0), (0, size - groups.shape[1])), constant_values=-1)

    def _hidden(self, inputs: ModelInputs) -> jax.Array | None:
        """Hidden states [B, T, D] after the last run decoder layer (None: the plan stops before the LLM)."""
        embeds = self._prompt_embeddings(inputs)
        if embeds is None:
            return None
        length = inputs.input_ids.shape[1]
        return self.decoder(embeds, inputs.positions, Attend(inputs.attention_mask, 0, self._groups(inputs, length)))

    def __call__(self, inputs: ModelInputs, all_logits: bool = False) -> jax.Array | None:
        """Logits [B, V] at each row's ``last_index`` (``all_logits``: [B, T, V]) when the plan asks for them."""
        hidden = self._hidden(inputs)
        if hidden is None:
            return None
        if all_logits:
            return self.decoder.logits(hidden)
        return self.decoder.logits(at_rows(hidden, inputs.last_index)) if self.plan.logits else None

    def logits_at(self, inputs: ModelInputs, index: jax.Array) -> jax.Array:
        """Logits [B, K, V] at positions ``index`` [B, K] of each row: fine-tuning's loss needs the few positions
        that predict the answer's tokens, not T x V logits."""
        hidden = jnp.take_along_axis(self._hidden(inputs), index[..., None], axis=1)
        return self.decoder.logits(hidden)

    def prefill(self, inputs: ModelInputs, cache_size: int) -> jax.Array:
        """Run the (left-padded) prompt into a fresh cache of ``cache_size`` slots; logits [B, V] of the next
        token. Call with ``mutable=["cache"]``."""
        key_valid = jnp.zeros((inputs.batch_size, cache_size), bool)
        key_valid = key_valid.at[:, : inputs.input_ids.shape[1]].set(inputs.attention_mask.astype(bool))
        embeds = self._prompt_embeddings(inputs)
        hidden = self.decoder(embeds, inputs.positions, Attend(key_valid, 0, self._groups(inputs, cache_size),
                                                               cache_size))
        return self.decoder.logits(at_rows(hidden, inputs.last_index))

    def decode(self, tokens: jax.Array, positions: jax.Array, key_valid: jax.Array, slot: jax.Array) -> jax.Array:
        """One step: ``tokens`` [B] at rotary ``positions`` [B, P] into cache ``slot``; logits [B, V]. (A generated
        token is text: it sees the prompt's images causally, so no image groups are needed.)"""
        embeds = self.decoder.embed(tokens[:, None]).astype(self.dtype)
        hidden = self.decoder(embeds, positions[..., None], Attend(key_valid, slot, None, key_valid.shape[1]))
        return self.decoder.logits(hidden[:, 0])
