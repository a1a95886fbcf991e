"""Gemma 3's multimodal projector: the square patch grid average-pooled to the image tokens, a (1 + w) RMSNorm
(the "soft-embedding" norm), and a bias-free projection to the LLM's width.

The pooling kernel is ``merge_size`` (the side of the patch block one image token averages: 4 for 896 px /
patch 14 -> 64 x 64 patches -> 16 x 16 = 256 tokens). Tokens come out row-major over the pooled grid, as
transformers' ``AvgPool2d`` + ``flatten`` orders them.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprobe.models.config import ConnectorConfig
from jaxprobe.models.layers import Dense, RMSNorm


def average_pool(x: jax.Array, kernel: int) -> jax.Array:
    """Patch features [B, N, D] of a square row-major grid -> [B, (side / kernel)^2, D] block means (float32
    accumulation, like torch's average pooling)."""
    batch, patches, width = x.shape
    side = math.isqrt(patches)
    if side * side != patches or side % kernel:
        raise ValueError(f"{patches} patches are not a square grid whose side is a multiple of {kernel}")
    out = side // kernel
    blocks = x.astype(jnp.float32).reshape(batch, out, kernel, out, kernel, width)
    return blocks.mean(axis=(2, 4)).reshape(batch, out * out, width).astype(x.dtype)


class AvgPoolProjector(nn.Module):
    """Vision features [B, N, D_v] (after the tower's final LayerNorm) -> image tokens [B, N / merge^2, D]."""

    config: ConnectorConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        normed = RMSNorm(c.norm_eps, scale_offset=True, name="soft_emb_norm")(average_pool(x, c.merge_size))
        return Dense(c.out_size, use_bias=False, dtype=x.dtype, name="projection")(normed)
