"""The Qwen2 / Qwen2.5 decoder with multimodal rotary embeddings (M-RoPE); sows every layer's output."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprobe.models.config import TextConfig
from jaxprobe.models.layers import GatedMLP, RMSNorm, apply_rotary, dot_product_attention, layer_name


def mrope_tables(position_ids: jax.Array, config: TextConfig) -> tuple[jax.Array, jax.Array]:
    """cos/sin [B, T, head_dim] from (t, h, w) positions [3, B, T]: frequency band i uses axis i % 3."""
    inv_freq = 1.0 / (config.rope_theta ** (jnp.arange(0, config.head_dim, 2, dtype=jnp.float32) / config.head_dim))
    angles = position_ids[..., None].astype(jnp.float32) * inv_freq  # [3, B, T, head_dim / 2]
    bounds = jnp.cumsum(jnp.array((0, *config.mrope_section)))
    band = jnp.searchsorted(bounds[1:], jnp.arange(config.head_dim // 2), side="right") % 3
    picked = jnp.moveaxis(angles[band, :, :, jnp.arange(config.head_dim // 2)], 0, -1)  # [B, T, head_dim / 2]
    picked = jnp.concatenate([picked, picked], axis=-1)
    return jnp.cos(picked), jnp.sin(picked)


class DecoderAttention(nn.Module):
    config: TextConfig

    @nn.compact
    def __call__(self, x, cos, sin, mask):
        c = self.config
        q = nn.Dense(c.num_heads * c.head_dim, name="q_proj")(x).reshape(*x.shape[:2], c.num_heads, c.head_dim)
        k = nn.Dense(c.num_kv_heads * c.head_dim, name="k_proj")(x).reshape(*x.shape[:2], c.num_kv_heads, c.head_dim)
        v = nn.Dense(c.num_kv_heads * c.head_dim, name="v_proj")(x).reshape(*x.shape[:2], c.num_kv_heads, c.head_dim)
        out = dot_product_attention(apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v, mask)
        return nn.Dense(c.hidden_size, use_bias=False, name="o_proj")(out.reshape(*x.shape[:2], -1))


class DecoderLayer(nn.Module):
    config: TextConfig

    @nn.compact
    def __call__(self, x, cos, sin, mask):
        c = self.config
        x = x + DecoderAttention(c, name="self_attn")(RMSNorm(c.rms_norm_eps, name="input_layernorm")(x), cos, sin,
                                                      mask)
        mlp = GatedMLP(c.intermediate_size, c.hidden_size, c.hidden_act, bias=False, name="mlp")
        return x + mlp(RMSNorm(c.rms_norm_eps, name="post_attention_layernorm")(x))


class TextModel(nn.Module):
    """Embeddings in, final-norm hidden states out; ``llm.layer_NN`` sown after every layer (before the final norm)."""

    config: TextConfig

    def setup(self):
        c = self.config
        self.embed_tokens = nn.Embed(c.vocab_size, c.hidden_size)
        self.layers = [DecoderLayer(c, name=f"layers_{i}") for i in range(c.num_layers)]
        self.norm = RMSNorm(c.rms_norm_eps)

    def embed(self, input_ids: jax.Array) -> jax.Array:
        return self.embed_tokens(input_ids)

    def attend(self, hidden: jax.Array) -> jax.Array:
        """Logits through the tied embedding matrix."""
        return self.embed_tokens.attend(hidden)

    def __call__(self, embeds, attention_mask, position_ids):
        cos, sin = mrope_tables(position_ids, self.config)
        length = embeds.shape[1]
        causal = jnp.tril(jnp.ones((length, length), bool))
        mask = causal[None, None] & attention_mask[:, None, None, :].astype(bool)
        x = embeds
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask)
            self.sow("intermediates", f"llm.{layer_name(i, self.config.num_layers)}", x)
        return self.norm(x)
