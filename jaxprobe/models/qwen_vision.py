"""Qwen2-VL and Qwen2.5-VL vision towers and the PatchMerger connector.

Images in a batch share one static patch grid (t, h, w), so everything positional (2D rotary positions, the
Qwen2.5-VL window permutation and window masks) is computed in numpy at trace time and jit compiles once per
grid. The batch axis plays the role of transformers' packed ``cu_seqlens`` over images.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe.models.config import VisionConfig
from jaxprobe.models.layers import (
    ACTIVATIONS,
    GatedMLP,
    PlainMLP,
    RMSNorm,
    apply_rotary,
    dot_product_attention,
    layer_name,
)

Grid = tuple[int, int, int]


def vision_positions(grid: Grid, merge: int) -> np.ndarray:
    """(h, w) of every patch [N, 2], in the processor's order: merge x merge blocks, row-major inside."""
    t, h, w = grid
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    shape = (h // merge, merge, w // merge, merge)
    rows = rows.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
    cols = cols.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
    return np.tile(np.stack([rows, cols], -1), (t, 1))


def window_layout(grid: Grid, config: VisionConfig) -> tuple[np.ndarray, np.ndarray]:
    """Qwen2.5-VL windows: merged-unit order [N / merge^2] and the window id of each permuted patch [N]."""
    t, h, w = grid
    units_h, units_w = h // config.merge_size, w // config.merge_size
    span = config.window_size // config.merge_size // config.patch_size  # window side in merged units
    index = np.arange(t * units_h * units_w).reshape(t, units_h, units_w)
    pad_h, pad_w = (-units_h) % span, (-units_w) % span
    padded = np.pad(index, ((0, 0), (0, pad_h), (0, pad_w)), constant_values=-1)
    windows = padded.reshape(t, (units_h + pad_h) // span, span, (units_w + pad_w) // span, span)
    windows = windows.transpose(0, 1, 3, 2, 4).reshape(-1, span * span)
    order, window_of_unit = [], []
    for number, window in enumerate(row[row >= 0] for row in windows):
        order.extend(window.tolist())
        window_of_unit.extend([number] * len(window))
    unit = config.merge_size**2
    return np.asarray(order), np.repeat(np.asarray(window_of_unit), unit)


def rotary_tables(positions: np.ndarray, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Axial 2D rotary cos/sin [N, head_dim]: h and w each rotate a quarter of the frequencies."""
    spatial = head_dim // 2
    inv_freq = 1.0 / (theta ** (np.arange(0, spatial, 2, dtype=np.float32) / spatial))
    angles = np.concatenate([positions[:, :1] * inv_freq, positions[:, 1:] * inv_freq], axis=-1)
    angles = np.concatenate([angles, angles], axis=-1).astype(np.float32)
    return np.cos(angles), np.sin(angles)


def permute_units(x: np.ndarray | jax.Array, order: np.ndarray, unit: int):
    """Reorder patches by merged unit (axis -2 of [..., N, D]): transformers' ``permute_input_for_window_attn``."""
    shape = x.shape
    grouped = x.reshape(*shape[:-2], shape[-2] // unit, unit, shape[-1])
    return grouped[..., order, :, :].reshape(shape)


class VisionAttention(nn.Module):
    config: VisionConfig

    @nn.compact
    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: jax.Array | None) -> jax.Array:
        heads = self.config.num_heads
        qkv = nn.Dense(3 * self.config.hidden_size, name="qkv")(x)
        q, k, v = jnp.moveaxis(qkv.reshape(*x.shape[:2], 3, heads, -1), 2, 0)
        out = dot_product_attention(apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v, mask)
        return nn.Dense(self.config.hidden_size, name="proj")(out.reshape(x.shape))


class VisionBlock(nn.Module):
    config: VisionConfig

    @nn.compact
    def __call__(self, x, cos, sin, mask):
        c = self.config
        if c.family == "qwen2_5_vl":
            norm1, norm2 = RMSNorm(c.norm_eps, name="norm1"), RMSNorm(c.norm_eps, name="norm2")
            mlp = GatedMLP(c.intermediate_size, c.hidden_size, c.hidden_act, bias=True, name="mlp")
        else:
            norm1, norm2 = nn.LayerNorm(c.norm_eps, name="norm1"), nn.LayerNorm(c.norm_eps, name="norm2")
            mlp = PlainMLP(c.intermediate_size, c.hidden_size, c.hidden_act, name="mlp")
        x = x + VisionAttention(c, name="attn")(norm1(x), cos, sin, mask)
        return x + mlp(norm2(x))


class PatchMerger(nn.Module):
    """The connector: norm, then each merge x merge block of patches concatenated and projected by a 2-layer MLP."""

    config: VisionConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        norm = RMSNorm(c.norm_eps, name="ln_q") if c.family == "qwen2_5_vl" else nn.LayerNorm(c.norm_eps,
                                                                                               name="ln_q")
        width = c.hidden_size * c.merge_size**2
        merged = norm(x).reshape(x.shape[0], -1, width)
        hidden = ACTIVATIONS["gelu"](nn.Dense(width, name="mlp_0")(merged))
        return nn.Dense(c.out_hidden_size, name="mlp_2")(hidden)


class VisionTower(nn.Module):
    """Patch pixels [B, N, C*T*P*P] -> merged image embeddings [B, N / merge^2, D_text]; sows every block."""

    config: VisionConfig
    grid: Grid

    def _layout(self):
        c = self.config
        if self.grid[0] != 1:
            raise ValueError(f"jaxprobe feeds single images (temporal grid 1); got grid {self.grid}")
        positions = vision_positions(self.grid, c.merge_size)
        cos, sin = rotary_tables(positions, c.hidden_size // c.num_heads, c.rope_theta)
        if not c.window_size:
            return cos, sin, None, None
        order, window_ids = window_layout(self.grid, c)
        unit = c.merge_size**2
        cos, sin = permute_units(cos, order, unit), permute_units(sin, order, unit)
        return cos, sin, order, window_ids[:, None] == window_ids[None, :]

    @nn.compact
    def __call__(self, pixels: jax.Array) -> jax.Array:
        c = self.config
        cos, sin, order, window_mask = self._layout()
        x = nn.Dense(c.hidden_size, use_bias=False, name="patch_embed")(pixels)
        if order is not None:
            x = permute_units(x, order, c.merge_size**2)
        for i in range(c.depth):
            full = window_mask is None or i in c.fullatt_block_indexes
            x = VisionBlock(c, name=f"blocks_{i}")(x, cos, sin, None if full else window_mask)
            self.sow("intermediates", f"vision.{layer_name(i, c.depth)}", x)
        merged = PatchMerger(c, name="merger")(x)
        if order is not None:
            merged = merged[:, np.argsort(order)]
        self.sow("intermediates", "connector.output", merged)
        return merged
