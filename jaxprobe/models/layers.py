"""Shared pieces: the Dense layer, norms, rotary embeddings, attention with GQA, MLPs. Softmax and norms accumulate
in float32."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

ACTIVATIONS = {
    "silu": jax.nn.silu,
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}
NEG_INF = jnp.finfo(jnp.float32).min
LORA = "lora"  # variable collection of LoRA adapters: {"a": [in, r], "b": [r, out], "scale": [], "dropout": []}
LORA_DROPOUT = "lora_dropout"  # rng stream; LoRA dropout is applied only when it is given (training)


class Dense(nn.Module):
    """``nn.Dense`` (same param names, init and maths: kernel [in, out], optional bias), plus LoRA.

    When the ``lora`` collection holds an adapter for this layer, the output is ``W x + scale * B A x`` with
    ``scale = alpha / r``; the adapter lives outside ``params`` so the params tree, the loader, the cache and the
    sites are the same with or without one, and only the adapter need be trained. Every linear layer of
    ``jaxprobe.models`` is this class (a test enforces it), so any of them can be a LoRA target.
    """

    features: int
    use_bias: bool = True
    dtype: Any = None  # the computation's dtype (None: promoted from the input and the params)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (jnp.shape(x)[-1], self.features),
                            jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32) if self.use_bias \
            else None
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
        if bias is not None:
            y += jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
        if self.has_variable(LORA, "a"):
            y = y + self._low_rank(x)
        return y

    def _low_rank(self, x: jax.Array) -> jax.Array:
        """``scale * B A dropout(x)`` (PEFT's LoRA forward), in the computation's dtype."""
        a, b, scale = (self.get_variable(LORA, name) for name in ("a", "b", "scale"))
        if self.has_rng(LORA_DROPOUT):
            rate = self.get_variable(LORA, "dropout")
            keep = jax.random.bernoulli(self.make_rng(LORA_DROPOUT), 1.0 - rate, x.shape)
            x = jnp.where(keep, x / (1.0 - rate).astype(x.dtype), jnp.zeros((), x.dtype))
        rows = x.reshape(-1, x.shape[-1])  # 2-D: the backward's A gradient is one plain matmul (XLA:CPU is slow
        # on a dot contracting over the batch and sequence axes at once)
        low = ((rows @ a.astype(x.dtype)) @ b.astype(x.dtype)) * scale.astype(x.dtype)
        return low.reshape(*x.shape[:-1], low.shape[-1])


class RMSNorm(nn.Module):
    """x / rms(x), normalised in float32.

    Qwen2 / Llama: cast back to the input dtype, then times ``scale``. Gemma (``scale_offset``): times
    ``(1 + scale)`` in float32, then cast (the stored weight is the offset from 1).
    """

    eps: float
    scale_offset: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = nn.initializers.zeros if self.scale_offset else nn.initializers.ones
        scale = self.param("scale", init, (x.shape[-1],))
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32**2, -1, keepdims=True) + self.eps)
        if self.scale_offset:
            return (normed * (1.0 + scale.astype(jnp.float32))).astype(x.dtype)
        return scale.astype(x.dtype) * normed.astype(x.dtype)


def make_norm(kind: str, eps: float, name: str) -> nn.Module:
    """The norm a config flag names; LayerNorm statistics are float32 whatever the activation dtype."""
    if kind == "rmsnorm":
        return RMSNorm(eps, name=name)
    return nn.LayerNorm(epsilon=eps, name=name, dtype=None, param_dtype=jnp.float32, use_fast_variance=False)


def rotate_half(x: jax.Array) -> jax.Array:
    first, second = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-second, first], axis=-1)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [..., T, H, Dh] rotated by cos/sin [..., T, Dh] (broadcast over heads), in float32."""
    cos, sin = cos[..., None, :], sin[..., None, :]
    x32 = x.astype(jnp.float32)
    return (x32 * cos + rotate_half(x32) * sin).astype(x.dtype)


def inverse_frequencies(dim: int, theta: float) -> jax.Array:
    """theta^(-2i/dim) for i < dim/2: the standard rotary frequencies."""
    return 1.0 / (theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))


QUERY_BLOCK = 1024  # longer queries are attended block by block: memory O(block x S), not O(T x S)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None,
              scale: float | None = None, block: int = QUERY_BLOCK) -> jax.Array:
    """Softmax attention; q [B, T, H, Dh], k/v [B, S, Hkv, Dh] with H a multiple of Hkv (GQA, no K/V copies),
    mask broadcastable to [B, Hkv, G, T, S] (use ``mask[:, None, None]`` for a [B, T, S] mask); logits are scaled
    by ``scale`` (default 1 / sqrt(Dh)).

    Queries longer than ``block`` (a native-resolution image of 16k patches) are processed ``block`` at a time
    with ``lax.map``, so the [T, S] scores never exist at once (16k x 16k x 16 heads would be 16 GB in float32).
    """
    length = q.shape[1]
    if length <= block:
        return _attention(q, k, v, mask, scale)
    blocks = -(-length // block)
    padding = blocks * block - length
    q_blocks = jnp.moveaxis(jnp.pad(q, ((0, 0), (0, padding), (0, 0), (0, 0))).reshape(
        q.shape[0], blocks, block, *q.shape[2:]), 1, 0)
    if mask is not None and mask.shape[-2] > 1:  # a per-query mask is cut into the same blocks
        mask = jnp.broadcast_to(mask, (*mask.shape[:-2], length, mask.shape[-1]))
        mask = jnp.pad(mask, [(0, 0)] * (mask.ndim - 2) + [(0, padding), (0, 0)], constant_values=True)
        masks = jnp.moveaxis(mask.reshape(*mask.shape[:-2], blocks, block, mask.shape[-1]), -3, 0)
        out = jax.lax.map(lambda args: _attention(args[0], k, v, args[1], scale), (q_blocks, masks))
    else:
        out = jax.lax.map(lambda query: _attention(query, k, v, mask, scale), q_blocks)
    return jnp.moveaxis(out, 0, 1).reshape(q.shape[0], blocks * block, *q.shape[2:])[:, :length]


def _attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None,
               scale: float | None) -> jax.Array:
    batch, length, heads, head_dim = q.shape
    groups = heads // k.shape[-2]
    q = q.reshape(batch, length, k.shape[-2], groups, head_dim)
    scale = head_dim**-0.5 if scale is None else scale
    logits = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32) * scale
    if mask is not None:
        logits = jnp.where(mask, logits, NEG_INF)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", weights, v, preferred_element_type=jnp.float32)
    return out.reshape(batch, length, heads, head_dim).astype(v.dtype)


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)): Qwen2 decoder (no bias) and Qwen2.5-VL vision blocks (bias)."""

    hidden: int
    out: int
    act: str
    bias: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        gate = Dense(self.hidden, use_bias=self.bias, dtype=x.dtype, name="gate_proj")(x)
        up = Dense(self.hidden, use_bias=self.bias, dtype=x.dtype, name="up_proj")(x)
        return Dense(self.out, use_bias=self.bias, dtype=x.dtype, name="down_proj")(ACTIVATIONS[self.act](gate) * up)


class PlainMLP(nn.Module):
    """fc2(act(fc1(x))): Qwen2-VL vision blocks."""

    hidden: int
    out: int
    act: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        hidden = ACTIVATIONS[self.act](Dense(self.hidden, dtype=x.dtype, name="fc1")(x))
        return Dense(self.out, dtype=x.dtype, name="fc2")(hidden)


def make_mlp(kind: str, hidden: int, out: int, act: str, bias: bool, name: str) -> nn.Module:
    return GatedMLP(hidden, out, act, bias, name=name) if kind == "gated" else PlainMLP(hidden, out, act, name=name)


def layer_name(index: int, depth: int) -> str:
    """``layer_07``: zero-padded to the depth's width (at least two digits), as DESIGN.md names sites."""
    return f"layer_{index:0{max(2, len(str(depth - 1)))}d}"
