"""A decoder-only LLM with feature flags (``TextConfig``): Qwen2 / Qwen2.5 (q/k/v bias, M-RoPE or 1-D RoPE),
Llama / Mistral, Qwen3 (QK-norm) and Gemma 3 (1 + w norms, sandwich norms, scaled embeddings, interleaved
sliding-window and global layers with their own rotary tables, bidirectional attention inside an image).

Layers are stacked with ``nn.scan`` (``jaxprobe.models.stack``); every layer's output (before the final norm) is
sown as ``llm.layers`` [L, B, T, D]. A per-layer flag picks the sliding-window mask and the local rotary table
inside the scanned body. The final norm and the logits are separate methods so a forward can take logits only
where it needs them (the answer position), not at every position.

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
from jaxprobe.models.layers import Dense, GatedMLP, RMSNorm, apply_rotary, attention, inverse_frequencies
from jaxprobe.models.stack import stacked


def rotary_tables(positions: jax.Array, config: TextConfig, theta: float, scaling: float = 1.0):
    """cos/sin [B, T, head_dim] from positions [B, P, T]; M-RoPE: frequency band i uses axis i % 3."""
    inv_freq = inverse_frequencies(config.head_dim, theta) / scaling
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, P, T, head_dim / 2]
    if config.rope_kind == "mrope":
        band = np.repeat(np.arange(len(config.mrope_section)) % 3, config.mrope_section)  # [head_dim / 2]
        index = jnp.broadcast_to(jnp.asarray(band), (angles.shape[0], 1, *angles.shape[2:]))
        angles = jnp.take_along_axis(angles, index, axis=1)
    angles = angles[:, 0]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def image_groups(image_mask: jax.Array) -> jax.Array:
    """[B, T] id of the image each token belongs to (runs of image tokens), -1 for text."""
    starts = image_mask & ~jnp.pad(image_mask, ((0, 0), (1, 0)))[:, :-1]
    return jnp.where(image_mask, jnp.cumsum(starts, axis=1) - 1, -1)


@struct.dataclass
class Attend:
    """Who attends to whom in one decoder call: ``key_valid`` [B, S] marks real (non-padding) keys; queries sit at
    slots ``offset .. offset + T``; ``cache_size`` S > 0 reads and writes the key/value cache, 0 attends only to
    this call's tokens (S = T). ``groups`` [B, S] (image id or -1): keys of the query's own image are visible
    whatever their slot (bidirectional attention inside an image)."""

    key_valid: jax.Array
    offset: jax.Array | int = 0
    groups: jax.Array | None = None
    cache_size: int = struct.field(pytree_node=False, default=0)

    def mask(self, length: int, window: int = 0) -> jax.Array:
        """[B, 1, 1, T, S]: causal over slots (or the query's image), within ``window`` slots if set, and only
        valid keys."""
        query_slots = self.offset + jnp.arange(length)
        key_slots = jnp.arange(self.key_valid.shape[1])
        visible = (key_slots[None, :] <= query_slots[:, None])[None]
        if self.groups is not None:
            query_groups = jax.lax.dynamic_slice_in_dim(self.groups, self.offset, length, axis=1)[:, :, None]
            visible = visible | ((query_groups == self.groups[:, None, :]) & (query_groups >= 0))
        if window:
            visible = visible & (key_slots[None, :] > query_slots[:, None] - window)[None]
        return (visible & self.key_valid[:, None, :].astype(bool))[:, None, None]


@struct.dataclass
class LayerInputs:
    """What every layer reads: rotary tables and masks for full-attention and sliding layers."""

    cos: jax.Array
    sin: jax.Array
    mask: jax.Array
    local_cos: jax.Array | None = None
    local_sin: jax.Array | None = None
    local_mask: jax.Array | None = None

    def pick(self, sliding: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        if self.local_mask is None:
            return self.cos, self.sin, self.mask
        return (jnp.where(sliding, self.local_cos, self.cos), jnp.where(sliding, self.local_sin, self.sin),
                jnp.where(sliding, self.local_mask, self.mask))


def norm(config: TextConfig, name: str) -> RMSNorm:
    return RMSNorm(config.norm_eps, config.norm_scale_offset, name=name)


class DecoderAttention(nn.Module):
    config: TextConfig

    @nn.compact
    def __call__(self, x, cos, sin, mask, attend: Attend):
        c = self.config

        def project(name: str, heads: int) -> jax.Array:
            out = Dense(heads * c.head_dim, use_bias=c.qkv_bias, dtype=x.dtype, name=name)(x)
            return out.reshape(*x.shape[:2], heads, c.head_dim)

        q, k, v = project("q_proj", c.num_heads), project("k_proj", c.num_kv_heads), project("v_proj", c.num_kv_heads)
        if c.qk_norm:
            q, k = norm(c, "q_norm")(q), norm(c, "k_norm")(k)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if attend.cache_size:
            k, v = self._cached(k, v, attend)
        out = attention(q, k, v, mask, c.attention_scale)
        return Dense(c.hidden_size, use_bias=c.o_bias, dtype=x.dtype, name="o_proj")(out.reshape(*x.shape[:2], -1))

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
    def __call__(self, x, shared: LayerInputs, attend: Attend, sliding: jax.Array):
        c = self.config
        cos, sin, mask = shared.pick(sliding)
        attended = DecoderAttention(c, name="self_attn")(norm(c, "attn_norm")(x), cos, sin, mask, attend)
        x = x + (norm(c, "attn_out_norm")(attended) if c.sandwich_norms else attended)
        mlp = GatedMLP(c.intermediate_size, c.hidden_size, c.hidden_act, bias=c.mlp_bias, name="mlp")
        transformed = mlp(norm(c, "mlp_norm")(x))
        x = x + (norm(c, "mlp_out_norm")(transformed) if c.sandwich_norms else transformed)
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
        self.layers = stacked(DecoderLayer, c.num_layers, self.run, self.remat, broadcast_args=2,
                              per_layer_args=1)(c)
        self.norm = norm(c, "norm")
        if not c.tie_word_embeddings:
            self.lm_head = Dense(c.vocab_size, use_bias=False)

    def embed(self, input_ids: jax.Array) -> jax.Array:
        embeds = self.embed_tokens(input_ids)
        if self.config.embed_scale:
            return embeds * jnp.asarray(self.config.hidden_size**0.5, embeds.dtype)
        return embeds

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Logits of final-layer hidden states (any leading shape), float32."""
        normed = self.norm(hidden)
        if self.config.tie_word_embeddings:
            return self.embed_tokens.attend(normed).astype(jnp.float32)
        return self.lm_head(normed).astype(jnp.float32)

    def layer_inputs(self, positions: jax.Array, attend: Attend, length: int) -> LayerInputs:
        c = self.config
        cos, sin = rotary_tables(positions, c, c.rope_theta, c.rope_scaling)
        shared = LayerInputs(cos, sin, attend.mask(length))
        if not any(c.sliding_layers):
            return shared
        local_cos, local_sin = rotary_tables(positions, c, c.local_rope_theta or c.rope_theta)
        return shared.replace(local_cos=local_cos, local_sin=local_sin,
                              local_mask=attend.mask(length, c.sliding_window))

    def __call__(self, embeds: jax.Array, positions: jax.Array, attend: Attend) -> jax.Array:
        """Hidden states [B, T, D] after the last run layer (before the final norm)."""
        shared = self.layer_inputs(positions, attend, embeds.shape[1])
        sliding = jnp.asarray(self.config.sliding_layers)[: self.run]
        x, _ = self.layers(embeds, shared, attend, sliding)
        return x
