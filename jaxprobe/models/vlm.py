"""``VisionLanguageModel``: vision tower -> connector -> decoder, with every site sown.

Sown (collection ``intermediates``): ``vision.layer_NN`` [B, N, D_v] (Qwen2.5-VL: in window order),
``connector.output`` [B, I, D] (the image embeddings the LLM receives, in image order), ``llm.layer_NN`` [B, T, D].
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprobe.models.config import VLMConfig
from jaxprobe.models.qwen_text import TextModel
from jaxprobe.models.qwen_vision import Grid, VisionTower


def scatter_image_embeddings(embeds: jax.Array, image_embeds: jax.Array, image_mask: jax.Array) -> jax.Array:
    """Put image embedding k of row b at row b's k-th image token (every row has the same number of them)."""
    slot = jnp.clip(jnp.cumsum(image_mask, axis=1) - 1, 0, image_embeds.shape[1] - 1)
    gathered = jnp.take_along_axis(image_embeds, slot[..., None], axis=1)
    return jnp.where(image_mask[..., None], gathered.astype(embeds.dtype), embeds)


class VisionLanguageModel(nn.Module):
    config: VLMConfig
    grid: Grid

    def setup(self):
        self.visual = VisionTower(self.config.vision, self.grid)
        self.model = TextModel(self.config.text)
        if not self.config.text.tie_word_embeddings:
            self.lm_head = nn.Dense(self.config.text.vocab_size, use_bias=False)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array, position_ids: jax.Array,
                 pixels: jax.Array) -> jax.Array:
        """Logits [B, T, V] for token ids [B, T], padding mask [B, T], M-RoPE positions [3, B, T] and patches."""
        image_mask = input_ids == self.config.image_token_id
        embeds = scatter_image_embeddings(self.model.embed(input_ids), self.visual(pixels), image_mask)
        hidden = self.model(embeds, attention_mask, position_ids)
        if self.config.text.tie_word_embeddings:
            return self.model.attend(hidden)
        return self.lm_head(hidden)
