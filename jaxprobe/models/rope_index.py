"""M-RoPE position ids on the host: text tokens count up on all three axes, image tokens get (t, h, w).

Pure bookkeeping on token ids, done in numpy before the jitted forward (transformers' ``get_rope_index`` for
images).
"""

from __future__ import annotations

import itertools

import numpy as np


def rope_index(input_ids: np.ndarray, attention_mask: np.ndarray, image_grids: np.ndarray, image_token_id: int,
               merge: int) -> np.ndarray:
    """Position ids [3, B, T] for right- or left-padded ``input_ids`` [B, T]; grids [num_images, 3] in order."""
    positions = np.zeros((3, *input_ids.shape), np.int64)
    grids = iter(np.asarray(image_grids).tolist())
    for row, (ids, mask) in enumerate(zip(input_ids, attention_mask.astype(bool), strict=True)):
        is_image = ids[mask] == image_token_id
        pieces, current = [], 0
        for image, run in itertools.groupby(is_image):
            length = len(list(run))
            if not image:
                pieces.append(np.arange(length)[None].repeat(3, 0) + current)
                current += length
                continue
            t, h, w = next(grids)
            th, hh, ww = np.meshgrid(np.arange(t), np.arange(h // merge), np.arange(w // merge), indexing="ij")
            block = np.stack([th, hh, ww]).reshape(3, -1) + current
            if block.shape[1] != length:
                raise ValueError(f"row {row}: {length} image tokens but the grid {(t, h, w)} gives {block.shape[1]}")
            pieces.append(block)
            current += max(h, w) // merge
        positions[:, row, mask] = np.concatenate(pieces, axis=1)
    return positions
