"""The ``mlp2x_gelu`` projector (LLaVA, Hulu-Med): Linear, exact GELU, Linear."""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxprobe.models.config import ConnectorConfig
from jaxprobe.models.layers import ACTIVATIONS, Dense


class MLPProjector(nn.Module):
    """Vision features [B, N, D_v] -> image tokens [B, N, D]."""

    config: ConnectorConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        hidden = ACTIVATIONS["gelu"](Dense(c.out_size, dtype=x.dtype, name="linear_1")(x))
        return Dense(c.out_size, dtype=x.dtype, name="linear_2")(hidden)
