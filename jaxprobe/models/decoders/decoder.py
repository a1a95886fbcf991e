"""A decoder-only LLM with feature flags: Qwen2 / Qwen2.5 (q/k/v bias, M-RoPE or 1-D RoPE) so far.

Layers are stacked with ``nn.scan`` (``jaxprobe.models.stack``); every layer's output (before the final norm) is
sown as ``llm.layers`` [L, B, T, D]. The final norm and the logits are separate methods so a forward can take
logits only where it needs them (the answer position), not at every position.

Generation uses a key/value cache (the ``cache`` collection, stacked on the layer axis like the params): the
tokens of one call are written at cache slots ``offset .. offset + T`` and attend to every valid slot up to their
own. A batch is padded on the left, so every row's next token goes to the same slot.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxprobe.models.config import TextConfig
from jaxprobe.models.layers import GatedMLP, RMSNorm, apply_rotary, attention, inverse_frequencies
from jaxprobe.models.stack import stacked


def rotary_tables(positions: jax.Array, config: TextConfig) -> tuple[jax.Array, jax.Array]:
    """cos/sin [B, T, head_dim] from positions [B, P, T]; M-RoPE: frequency band i uses axis i % 3."""
    inv_freq = inverse_frequencies(config.head_dim, config.rope_theta)
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, P, T, head_dim / 2]
    if config.rope_kind == "mrope":
        band = np.repeat(np.arange(len(config.mrope_section)) % 3, config.mrope_section)  # [head_dim / 2]
        index = jnp.broadcast_to(jnp.asarray(band), (angles.shape[0], 1, *angles.shape[2:]))
        angles = jnp.take_along_axis(angles, index, axis=1)
    angles = angles[:, 0]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


@struct.dataclass
class Attend:
    """Who attends to whom in one decoder call: ``key_valid`` [B, S] marks real (non-padding) keys; queries sit at
    slots ``offset .. offset + T``; ``cache_size`` S > 0 reads and writes the key/value cache, 0 attends only to
    this call's tokens (S = T)."""

    key_valid: jax.Array
    offset: jax.Array | int = 0
    cache_size: int = struct.field(pytree_node=False, default=0)

    def mask(self, length: int) -> jax.Array:
        """[B, 1, 1, T, S]: causal over slots, and only valid keys."""
        query_slots = self.offset + jnp.arange(length)
        key_slots = jnp.arange(self.key_valid.shape[1])
        causal = key_slots[None, :] <= query_slots[:, None]
        return (causal[None] & self.key_valid[:, None, :].astype(bool))[:, None, None]


class DecoderAttention(nn.Module):
    config: TextConfig

    @nn.compact
    def __call__(self, x, cos, sin, mask, attend: Attend):
        c = self.config

        def project(name: str, heads: int) -> jax.Array:
            out = nn.Dense(heads * c.head_dim, use_bias=c.qkv_bias, dtype=x.dtype, name=name)(x)
            return out.reshape(*x.shape[:2], heads, c.head_dim)

        q, k, v = project("q_proj", c.num_heads), project("k_proj", c.num_kv_heads), project("v_proj", c.num_kv_heads)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if attend.cache_size:
            k, v = self._cached(k, v, attend)
        out = attention(q, k, v, mask)
        return nn.Dense(c.hidden_size, use_bias=False, dtype=x.dtype, name="o_proj")(out.reshape(*x.shape[:2], -1))

    def _cached(self, k: jax.Array, v: jax.Array, attend: Attend) -> tuple[jax.Array, jax.Array]:
        """Write this call's keys/values at slot ``offset`` and return the whole cache."""
        shape = (k.shape[0], attend.cache_size, *k.shape[2:])
        keys = self.variable("cache", "key", jnp.zeros, shape, k.dtype)
        values = self.variable("cache", "value", jnp.zeros, shape, v.dtype)
        start = (0, attend.offset, 0, 0)
        keys.value = jax.lax.dynamic_update_slice(keys.value, k.astype(keys.value.dtype), start)
        values.value = jax.lax.dynamic_update_slice(values.value, v.astype(values.value.dtype), start)
        return keys.value, values.value


class DecoderLayer(nn.Module):
    config: TextConfig

    @nn.compact
    def __call__(self, x, cos, sin, mask, attend):
        c = self.config
        attn = DecoderAttention(c, name="self_attn")
        x = x + attn(RMSNorm(c.norm_eps, name="input_layernorm")(x), cos, sin, mask, attend)
        mlp = GatedMLP(c.intermediate_size, c.hidden_size, c.hidden_act, bias=False, name="mlp")
        x = x + mlp(RMSNorm(c.norm_eps, name="post_attention_layernorm")(x))
        self.sow("intermediates", "llm.layers", x)
        return x, None


class Decoder(nn.Module):
    """Token embeddings, the first ``run`` of ``num_layers`` scanned layers, final norm, LM head."""

    config: TextConfig
    run: int
    remat: bool = False

    def setup(self):
        c = self.config
        self.embed_tokens = nn.Embed(c.vocab_size, c.hidden_size)
        self.layers = stacked(DecoderLayer, c.num_layers, self.run, self.remat, broadcast_args=4)(c)
        self.norm = RMSNorm(c.norm_eps)
        if not c.tie_word_embeddings:
            self.lm_head = nn.Dense(c.vocab_size, use_bias=False)

    def embed(self, input_ids: jax.Array) -> jax.Array:
        return self.embed_tokens(input_ids)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Logits of final-layer hidden states (any leading shape), float32."""
        normed = self.norm(hidden)
        if self.config.tie_word_embeddings:
            return self.embed_tokens.attend(normed).astype(jnp.float32)
        return self.lm_head(normed).astype(jnp.float32)

    def __call__(self, embeds: jax.Array, positions: jax.Array, attend: Attend) -> jax.Array:
        """Hidden states [B, T, D] after the last run layer (before the final norm)."""
        cos, sin = rotary_tables(positions, self.config)
        x, _ = self.layers(embeds, cos, sin, attend.mask(embeds.shape[1]), attend)
        return x
