"""The Qwen2-VL / Qwen2.5-VL vision transformer: patch embedding, axial 2-D rotary, (windowed) blocks.

Images in a batch share one static patch grid (t, h, w), so everything positional (rotary tables, the window
permutation and the window gather) is computed in numpy at trace time and jit compiles once per grid. The batch
axis plays the role of transformers' packed ``cu_seqlens`` over images.

Window attention (Qwen2.5-VL) is computed window by window: patches are permuted into window order, gathered into
[windows, W] slots (edge windows padded and masked), and attend only inside their window, so its cost is linear
in the number of windows rather than quadratic in the patches. Blocks listed in ``fullatt_block_indexes`` attend
over the whole image; a per-block flag picks the branch inside the scanned body.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe.models.config import VisionConfig
from jaxprobe.models.layers import Dense, apply_rotary, attention, make_mlp, make_norm
from jaxprobe.models.stack import stacked

Grid = tuple[int, int, int]


def patch_positions(grid: Grid, merge: int) -> np.ndarray:
    """(h, w) of every patch [N, 2], in the processor's order: merge x merge blocks, row-major inside."""
    t, h, w = grid
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    shape = (h // merge, merge, w // merge, merge)
    rows = rows.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
    cols = cols.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
    return np.tile(np.stack([rows, cols], -1), (t, 1))


def rotary_tables(positions: np.ndarray, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Axial 2D rotary cos/sin [N, head_dim]: h and w each rotate a quarter of the frequencies."""
    spatial = head_dim // 2
    inv_freq = 1.0 / (theta ** (np.arange(0, spatial, 2, dtype=np.float32) / spatial))
    angles = np.concatenate([positions[:, :1] * inv_freq, positions[:, 1:] * inv_freq], axis=-1)
    angles = np.concatenate([angles, angles], axis=-1).astype(np.float32)
    return np.cos(angles), np.sin(angles)


@dataclasses.dataclass(frozen=True)
class WindowLayout:
    """Qwen2.5-VL windows of one grid: unit order, and the [windows, slots] gather of permuted patches."""

    unit_order: np.ndarray  # [N / unit]: merged units in window order
    gather: np.ndarray  # [num_windows, slots]: patch index (window order) in each slot, 0 where padded
    valid: np.ndarray  # [num_windows, slots] bool
    scatter: np.ndarray  # [N]: flat slot of each permuted patch


def window_layout(grid: Grid, config: VisionConfig) -> WindowLayout:
    t, h, w = grid
    units_h, units_w = h // config.merge_size, w // config.merge_size
    span = config.window_size // config.merge_size // config.patch_size  # window side in merged units
    index = np.arange(t * units_h * units_w).reshape(t, units_h, units_w)
    pad_h, pad_w = (-units_h) % span, (-units_w) % span
    padded = np.pad(index, ((0, 0), (0, pad_h), (0, pad_w)), constant_values=-1)
    windows = padded.reshape(t, (units_h + pad_h) // span, span, (units_w + pad_w) // span, span)
    windows = [row[row >= 0] for row in windows.transpose(0, 1, 3, 2, 4).reshape(-1, span * span)]
    windows = [window for window in windows if len(window)]
    unit = config.merge_size**2
    slots = max(len(window) for window in windows) * unit
    gather, valid, scatter, start = np.zeros((len(windows), slots), np.int32), np.zeros((len(windows), slots),
                                                                                         bool), [], 0
    for number, window in enumerate(windows):
        size = len(window) * unit
        gather[number, :size] = np.arange(start, start + size)
        valid[number, :size] = True
        scatter.extend(number * slots + np.arange(size))
        start += size
    return WindowLayout(np.concatenate(windows), gather, valid, np.asarray(scatter, np.int32))


def permute_units(x, order: np.ndarray, unit: int):
    """Reorder patches by merged unit (axis -2 of [..., N, D]): transformers' ``permute_input_for_window_attn``."""
    shape = x.shape
    grouped = x.reshape(*shape[:-2], shape[-2] // unit, unit, shape[-1])
    return grouped[..., order, :, :].reshape(shape)


def windowed_attention(q: jax.Array, k: jax.Array, v: jax.Array, layout: WindowLayout) -> jax.Array:
    """Attention inside each window: [B, N, H, Dh] patches (window order) -> the same shape."""
    batch, _, heads, head_dim = q.shape
    windows, slots = layout.gather.shape

    def to_windows(x):
        return x[:, layout.gather].reshape(batch * windows, slots, heads, head_dim)

    mask = jnp.tile(jnp.asarray(layout.valid), (batch, 1))[:, None, None, None, :]
    out = attention(to_windows(q), to_windows(k), to_windows(v), mask)
    return out.reshape(batch, windows * slots, heads, head_dim)[:, layout.scatter]


class VisionBlock(nn.Module):
    config: VisionConfig
    layout: WindowLayout | None

    @nn.compact
    def __call__(self, x, cos, sin, full_attention):
        c = self.config
        normed = make_norm(c.norm, c.norm_eps, "norm1")(x)
        qkv = Dense(3 * c.hidden_size, dtype=x.dtype, name="qkv")(normed)
        q, k, v = jnp.moveaxis(qkv.reshape(*x.shape[:2], 3, c.num_heads, c.head_dim), 2, 0)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if self.layout is None:
            out = attention(q, k, v, None)
        else:
            out = jax.lax.cond(full_attention, lambda *a: attention(*a, None),
                               lambda *a: windowed_attention(*a, self.layout), q, k, v)
        x = x + Dense(c.hidden_size, dtype=x.dtype, name="proj")(out.reshape(x.shape))
        mlp = make_mlp(c.mlp, c.intermediate_size, c.hidden_size, c.hidden_act, bias=True, name="mlp")
        x = x + mlp(make_norm(c.norm, c.norm_eps, "norm2")(x))
        self.sow("intermediates", "vision.layers", x)
        return x, None


class QwenVisionTower(nn.Module):
    """Patch pixels [B, N, C*T*P*P] (processor order) -> patch features [B, N, D] (processor order).

    Sows ``vision.layers`` [L, B, N, D] (Qwen2.5-VL: in window order, as transformers' blocks see them).
    """

    config: VisionConfig
    run: int
    remat: bool = False

    def _tables(self, grid: Grid):
        c = self.config
        if grid[0] != 1:
            raise ValueError(f"jaxprobe feeds single images (temporal grid 1); got grid {grid}")
        cos, sin = rotary_tables(patch_positions(grid, c.merge_size), c.head_dim, c.rope_theta)
        windowed = bool(c.window_size) and len(c.fullatt_block_indexes) < c.depth
        return cos, sin, window_layout(grid, c) if windowed else None

    @nn.compact
    def __call__(self, pixels: jax.Array, grid: Grid) -> jax.Array:
        """``grid`` is the static (t, h, w) patch grid every image of the batch shares."""
        c = self.config
        cos, sin, layout = self._tables(grid)
        unit = c.merge_size**2
        x = Dense(c.hidden_size, use_bias=False, dtype=pixels.dtype, name="patch_embed")(pixels)
        if layout is not None:
            x = permute_units(x, layout.unit_order, unit)
            cos, sin = permute_units(cos, layout.unit_order, unit), permute_units(sin, layout.unit_order, unit)
        full = jnp.asarray(np.isin(np.arange(c.depth), c.fullatt_block_indexes) | (layout is None))[: self.run]
        blocks = stacked(VisionBlock, c.depth, self.run, self.remat, broadcast_args=2, per_layer_args=1)
        x, _ = blocks(c, layout, name="blocks")(x, jnp.asarray(cos), jnp.asarray(sin), full)
        if layout is not None:
            x = permute_units(x, np.argsort(layout.unit_order), unit)
        return x
