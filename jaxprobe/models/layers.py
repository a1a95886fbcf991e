"""Shared pieces: norms, rotary embeddings, attention with GQA, MLPs. Softmax and norms run in float32."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {
    "silu": jax.nn.silu,
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}


class RMSNorm(nn.Module):
    eps: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        normed = x.astype(jnp.float32) * jax.lax.rsqrt(jnp.mean(x.astype(jnp.float32) ** 2, -1, keepdims=True)
                                                       + self.eps)
        return scale * normed.astype(x.dtype)


def layer_norm(eps: float, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, name=name)


def rotate_half(x: jax.Array) -> jax.Array:
    first, second = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-second, first], axis=-1)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [..., T, H, Dh] rotated by cos/sin [..., T, Dh] (broadcast over heads), in float32."""
    cos, sin = cos[..., None, :], sin[..., None, :]
    rotated = x.astype(jnp.float32) * cos + rotate_half(x.astype(jnp.float32)) * sin
    return rotated.astype(x.dtype)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None) -> jax.Array:
    """q [B, T, H, Dh], k/v [B, S, Hkv, Dh] (GQA: H a multiple of Hkv), mask broadcastable to [B, H, T, S]."""
    groups = q.shape[-2] // k.shape[-2]
    k, v = jnp.repeat(k, groups, axis=-2), jnp.repeat(v, groups, axis=-2)
    logits = jnp.einsum("bthd,bshd->bhts", q.astype(jnp.float32), k.astype(jnp.float32)) / jnp.sqrt(q.shape[-1])
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bhts,bshd->bthd", weights, v)


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)): Qwen2 decoder (no bias) and Qwen2.5-VL vision blocks (bias)."""

    hidden: int
    out: int
    act: str
    bias: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        gate = nn.Dense(self.hidden, use_bias=self.bias, name="gate_proj")(x)
        up = nn.Dense(self.hidden, use_bias=self.bias, name="up_proj")(x)
        return nn.Dense(self.out, use_bias=self.bias, name="down_proj")(ACTIVATIONS[self.act](gate) * up)


class PlainMLP(nn.Module):
    """fc2(act(fc1(x))): Qwen2-VL vision blocks."""

    hidden: int
    out: int
    act: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(self.out, name="fc2")(ACTIVATIONS[self.act](nn.Dense(self.hidden, name="fc1")(x)))


def layer_name(index: int, depth: int) -> str:
    """``layer_07``: zero-padded to the depth's width (at least two digits), as DESIGN.md names sites."""
    return f"layer_{index:0{max(2, len(str(depth - 1)))}d}"
