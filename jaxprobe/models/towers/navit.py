"""The NaViT vision encoder of VideoLLaMA3 and Hulu-Med: SigLIP blocks with 2-D rotary at native resolution.

There is no position embedding and no CLS token: each patch's (row, column) in its own image's grid rotates q and
k (the axial 2-D rotary of Qwen-VL's tower: the h and w halves of the frequencies, ``qwen_vit.rotary_tables``),
so one set of weights serves every aspect ratio and size. The blocks are ``vit.EncoderBlock`` (the SigLIP block)
given those rotary tables, followed by the final LayerNorm the connector reads.

Attention is block-diagonal per image: rows of the batch are images and attend only within their row, which is
exactly transformers' packed ``cu_seqlens`` attention over images. Images of one batch share one static patch
grid (jit compiles once per grid); the processor orders patches row-major (merge size 1 for images: one token per
patch, so no downsampling follows the encoder).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprobe.models.config import VisionConfig
from jaxprobe.models.layers import Dense, make_norm
from jaxprobe.models.stack import stacked
from jaxprobe.models.towers.qwen_vit import patch_positions, rotary_tables
from jaxprobe.models.towers.vit import EncoderBlock

Grid = tuple[int, int, int]


class NaViTTower(nn.Module):
    """Patch pixels [B, N, C*P*P] (row-major patches, each flattened C, P, P) -> patch features [B, N, D].

    Sows ``vision.layers`` [L, B, N, D] (each block's output, before the final LayerNorm).
    """

    config: VisionConfig
    run: int
    remat: bool = False

    @nn.compact
    def __call__(self, pixels: jax.Array, grid: Grid) -> jax.Array:
        """``grid`` is the static (t, h, w) patch grid every image of the batch shares."""
        c = self.config
        if grid[0] != 1 or c.merge_size != 1:
            raise ValueError(f"the NaViT tower takes single images at merge size 1; got grid {grid}, merge "
                             f"{c.merge_size}")
        cos, sin = rotary_tables(patch_positions(grid, 1), c.head_dim, c.rope_theta)
        x = Dense(c.hidden_size, use_bias=c.patch_bias, dtype=pixels.dtype, name="patch_embed")(pixels)
        blocks = stacked(EncoderBlock, c.depth, self.run, self.remat, broadcast_args=2)
        x, _ = blocks(c, False, name="blocks")(x, jnp.asarray(cos), jnp.asarray(sin))
        return make_norm("layernorm", c.norm_eps, "post_norm")(x) if c.post_norm else x
