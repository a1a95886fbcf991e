"""Qwen-VL's PatchMerger: norm, each merge x merge block of patches concatenated, 2-layer GELU MLP."""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxprobe.models.config import ConnectorConfig
from jaxprobe.models.layers import ACTIVATIONS, Dense, make_norm


class PatchMerger(nn.Module):
    """Patch features [B, N, D_v] (processor order: merge units contiguous) -> image tokens [B, N / merge^2, D]."""

    config: ConnectorConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        width = c.in_size * c.merge_size**2
        merged = make_norm(c.norm, c.norm_eps, "ln_q")(x).reshape(x.shape[0], -1, width)
        hidden = ACTIVATIONS["gelu"](Dense(width, dtype=x.dtype, name="mlp_0")(merged))
        return Dense(c.out_size, dtype=x.dtype, name="mlp_2")(hidden)
