"""A plain pre-norm vision transformer with feature flags: CLIP (CLS token, pre-LayerNorm, no patch bias,
quick-GELU) and SigLIP (patch bias, post-LayerNorm, tanh-GELU), both with learned position embeddings.

Pixels come as [B, C, H, W]; non-overlapping P x P patches are embedded by a matmul (the conv weight flattened in
C, P, P order). Blocks are scanned and sow ``vision.layers`` [L, B, N(+1), D] (with CLS at position 0 where the
tower has one). The connector reads block ``feature_layer`` (LLaVA: the second to last), optionally after the
final LayerNorm, with or without the CLS token.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprobe.models.config import VisionConfig
from jaxprobe.models.layers import ACTIVATIONS, Dense, apply_rotary, attention, make_norm
from jaxprobe.models.stack import stacked

Grid = tuple[int, int, int]


def patchify(pixels: jax.Array, patch: int) -> jax.Array:
    """[B, C, H, W] -> [B, (H/P)(W/P), C*P*P], patches row-major, each flattened as (C, P, P) like a conv kernel."""
    batch, channels, height, width = pixels.shape
    grid = pixels.reshape(batch, channels, height // patch, patch, width // patch, patch)
    return grid.transpose(0, 2, 4, 1, 3, 5).reshape(batch, (height // patch) * (width // patch), -1)


class EncoderBlock(nn.Module):
    """Pre-norm attention + MLP block (SigLIP/CLIP names). With ``cos``/``sin`` [N, Dh] tables, q and k are rotated
    before attention (2-D rotary of the NaViT tower, ``towers/navit.py``); without them the block is unchanged."""

    config: VisionConfig
    keep: bool  # return the block's output as a scan output (the connector reads an inner block)

    @nn.compact
    def __call__(self, x, cos=None, sin=None):
        c = self.config

        def project(name: str, inputs: jax.Array) -> jax.Array:
            return Dense(c.hidden_size, dtype=x.dtype, name=name)(inputs)

        normed = make_norm("layernorm", c.norm_eps, "layer_norm1")(x)
        split = (*x.shape[:2], c.num_heads, c.head_dim)
        q, k, v = (project(name, normed).reshape(split) for name in ("q_proj", "k_proj", "v_proj"))
        if cos is not None:
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        x = x + project("out_proj", attention(q, k, v, None).reshape(x.shape))
        normed = make_norm("layernorm", c.norm_eps, "layer_norm2")(x)
        hidden = ACTIVATIONS[c.hidden_act](Dense(c.intermediate_size, dtype=x.dtype, name="fc1")(normed))
        x = x + Dense(c.hidden_size, dtype=x.dtype, name="fc2")(hidden)
        self.sow("intermediates", "vision.layers", x)
        return x, (x if self.keep else None)


class ViTTower(nn.Module):
    """Pixels [B, C, H, W] -> the connector's input [B, N(+1), D]."""

    config: VisionConfig
    run: int
    remat: bool = False

    @nn.compact
    def __call__(self, pixels: jax.Array, grid: Grid) -> jax.Array:
        c = self.config
        x = Dense(c.hidden_size, use_bias=c.patch_bias, dtype=pixels.dtype, name="patch_embed")(
            patchify(pixels, c.patch_size))
        if c.class_token:
            cls = self.param("class_embedding", nn.initializers.normal(0.02), (c.hidden_size,))
            x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (x.shape[0], 1, c.hidden_size)), x], axis=1)
        positions = self.param("position_embedding", nn.initializers.normal(0.02), (x.shape[1], c.hidden_size))
        x = x + positions.astype(x.dtype)
        if c.pre_norm:
            x = make_norm("layernorm", c.norm_eps, "pre_norm")(x)
        feature_layer = c.feature_layer % c.depth
        inner = feature_layer != c.depth - 1
        x, kept = stacked(EncoderBlock, c.depth, self.run, self.remat, broadcast_args=0)(c, inner, name="blocks")(x)
        features = kept[feature_layer] if inner else x
        if c.post_norm:
            features = make_norm("layernorm", c.norm_eps, "post_norm")(features)
        return features[:, 1:] if c.class_token and c.drop_cls else features
