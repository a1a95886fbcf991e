"""``ModelInputs``: everything one forward needs, batch-major, as a pytree.

It lives in ``models/`` because the model consumes it and ``models/`` imports nothing outside itself; families
build it (``jaxprobe.families.base`` re-exports it) and capture shards its leaves over the ``data`` axis. The
image grid is static (part of the treedef), so ``jax.jit`` compiles once per grid and never sees it as data.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import struct


@struct.dataclass
class ModelInputs:
    input_ids: jax.Array  # [B, T] int32
    attention_mask: jax.Array  # [B, T] int32: 1 for tokens, 0 for padding
    positions: jax.Array  # [B, P, T] int32: P = 3 for M-RoPE (t, h, w), 1 for plain 1-D positions
    pixels: jax.Array  # [B, ...] float: the tower's input for one image per row
    image_mask: jax.Array  # [B, T] bool: where the image tokens are
    last_index: jax.Array  # [B] int32: the last prompt token (the answer is predicted there)
    extras: dict[str, Any] = struct.field(default_factory=dict)  # family-specific [B, ...] arrays
    image_grid: tuple[int, ...] = struct.field(pytree_node=False, default=())  # static (t, h, w) patch grid

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])
