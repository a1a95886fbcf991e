"""Hulu-Med's image geometry: the native-resolution target size, the patch grid, and the patch order.

Written from the documented behaviour of Hulu-Med's ``HulumedImageProcessor`` (``simple_batched_resize`` and
``_preprocess``; ../shared/families/hulumed.md A3), never imported from the hub. With ``f = patch x merge``:

- ``h = round(H / f) * f`` and ``w = round(W / f) * f``, with Python's ``round`` (banker's rounding: a side of
  exactly ``(k + 0.5) f`` pixels rounds to the even multiple);
- above ``max_tokens`` patches the image shrinks, keeping its aspect ratio: ``beta = sqrt(H W / max_pixels)``,
  ``h = floor(H / beta / f) f`` (same for w);
- below ``min_tokens`` it grows: ``beta = sqrt(min_pixels / (H W))``, ``h = ceil(H beta / f) f``.

The budget is per conversation; jaxprobe sends one image per conversation, so one image has the whole budget.

The PIL quirk: Hulu's resize reads a PIL image's ``.size`` (which is ``(W, H)``) as ``(height, width)``, so an image
loaded from a file path (the README's path) gets the target size of its transpose: it is squashed, not rotated.
Numpy inputs (what jaxprobe hands over) are unaffected. ``pil_swap=True`` reproduces the quirk for parity with that
path; the default ``False`` is what Hulu's processor does with the numpy images jaxprobe passes.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

DEFAULT_MIN_TOKENS, DEFAULT_MAX_TOKENS = 16, 16384  # Hulu's processor defaults


def target_size(height: int, width: int, factor: int, min_tokens: int, max_tokens: int) -> tuple[int, int]:
    """(height, width) an image of ``height`` x ``width`` pixels is resized to (multiples of ``factor``)."""
    min_pixels, max_pixels = min_tokens * factor * factor, max_tokens * factor * factor
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor  # banker's rounding, as Hulu's
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar, w_bar = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    if h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclasses.dataclass(frozen=True)
class ResizeRule:
    """The processor's geometry for one checkpoint: what size and grid an image of a given size gets."""

    patch_size: int
    merge_size: int = 1
    min_tokens: int = DEFAULT_MIN_TOKENS
    max_tokens: int = DEFAULT_MAX_TOKENS
    pil_swap: bool = False  # reproduce the reference's PIL width/height swap (module docstring)

    @property
    def unit(self) -> int:
        """Pixels per image-token side: target sizes are multiples of it."""
        return self.patch_size * self.merge_size

    def native_size(self, height: int, width: int) -> tuple[int, int]:
        """The aspect-kept target size (never swapped): a fixed point of itself, so extraction can resize to it."""
        return target_size(height, width, self.unit, self.min_tokens, self.max_tokens)

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) in pixels that an image of ``height`` x ``width`` is resized to."""
        if self.pil_swap:  # the reference computes the size of the transposed image and applies it as (h, w)
            return target_size(width, height, self.unit, self.min_tokens, self.max_tokens)
        return self.native_size(height, width)

    def grid(self, height: int, width: int) -> tuple[int, int, int]:
        """The (t, h, w) patch grid of an image of ``height`` x ``width`` (t = 1): the bucket it belongs to."""
        h, w = self.target_size(height, width)
        return 1, h // self.patch_size, w // self.patch_size

    def tokens(self, height: int, width: int) -> int:
        """Visual tokens (``<image>`` ids) of an image of ``height`` x ``width``."""
        _, h, w = self.grid(height, width)
        return h * w // self.merge_size**2


def patchify(image: np.ndarray, patch: int, merge: int) -> np.ndarray:
    """[C, H, W] -> [(H/P)(W/P), C*P*P] in Hulu's order: merge-block row, merge-block column, row and column inside
    the block; each patch flattened channel-major, then y, then x (a Conv2d kernel [D, C, P, P] flattened)."""
    channels, height, width = image.shape
    gh, gw = height // patch, width // patch
    blocks = image.reshape(channels, gh // merge, merge, patch, gw // merge, merge, patch)
    return blocks.transpose(1, 4, 2, 5, 0, 3, 6).reshape(gh * gw, channels * patch * patch)
