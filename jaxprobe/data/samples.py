"""What a dataset layout yields before any image is decoded: samples, and inputs we had to skip.

Images are stored as 8-bit RGB. How each Pillow mode gets there (``to_rgb``):

- 8-bit modes (``1``, ``L``, ``P``, ``LA``, ``PA``, ``RGB``, ``RGBA``, ``RGBX``, ``RGBa``, ``CMYK``, ``YCbCr``,
  ``LAB``, ``HSV``): Pillow's own conversion to RGB (alpha is dropped, not composited).
- More than 8 bits per sample (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``: 16-bit PNG/TIFF; ``I``: 32-bit
  integer; ``F``: 32-bit float TIFF, common in radiology): **min-max per image**: the image's darkest pixel
  becomes 0 and its brightest 255, linearly in between; a constant image becomes black. Rescaling by the bit
  depth instead would leave 12-bit data stored in 16-bit files almost black, and Pillow's own conversion clips
  everything above 255 to white. A float image with NaN/inf pixels is skipped.
- Any other mode (``La`` and whatever a future Pillow adds) is skipped and listed, never guessed at.

An image with more pixels than Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is skipped and
listed too, before it is decoded.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# Suffixes that count as images in folder layouts, compared case-insensitively.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

ImageSource = Path | Callable[[], np.ndarray]


class UnreadableImageError(Exception):
    """An input image could not be decoded; the builder skips it and lists it."""


@dataclasses.dataclass(frozen=True)
class Sample:
    """One image to write: where its pixels come from, its class index, stable id and patient group."""

    source: ImageSource
    label: int
    id: str
    group: str


@dataclasses.dataclass(frozen=True)
class Layout:
    """A dataset read off disk: class names and samples per split, in a deterministic order.

    ``inputs`` lists files other than the samples' own that the layout was read from (split lists, npz archives),
    so a change to them is noticed like a change to an image.
    """

    class_names: list[str]
    splits: dict[str, list[Sample]]
    skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)
    inputs: list[Path] = dataclasses.field(default_factory=list)


def is_image_file(path: Path) -> bool:
    """True for visible files with an image suffix (any case); hidden files such as ``._x.png`` are junk."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


EIGHT_BIT_MODES = ("1", "L", "P", "LA", "PA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV")
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # rescaled min-max per image


def min_max_to_uint8(values: np.ndarray) -> np.ndarray:
    """Linear map of the image's own [min, max] onto [0, 255]; a constant image becomes 0."""
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise UnreadableImageError("the image holds NaN or infinite pixel values")
    low, high = values.min(), values.max()
    if high == low:
        return np.zeros(values.shape, np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)


def to_rgb(image: Image.Image) -> np.ndarray:
    """uint8 [H, W, 3] of a decoded Pillow image, by the rule in the module docstring."""
    if image.mode in HIGH_DEPTH_MODES:
        gray = min_max_to_uint8(np.asarray(image))
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode in EIGHT_BIT_MODES:
        return np.asarray(image.convert("RGB"))
    raise UnreadableImageError(f"Pillow mode {image.mode!r} has no conversion rule (known: "
                               f"{', '.join(EIGHT_BIT_MODES + HIGH_DEPTH_MODES)})")


def _open_within_pixel_limit(source: Path) -> Image.Image:
    """Open (not decode) an image, refusing one over Pillow's pixel limit instead of only warning about it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(source)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise UnreadableImageError(f"more pixels than Pillow's limit of {Image.MAX_IMAGE_PIXELS} "
                                       f"(PIL.Image.MAX_IMAGE_PIXELS): {error}") from error


def read_rgb(source: ImageSource) -> np.ndarray:
    """Decode a sample to uint8 [H, W, 3] (see the module docstring for how each image mode is converted)."""
    if callable(source):
        array = np.asarray(source())
        if array.ndim == 2:
            array = array[..., None]
        if array.shape[-1] == 1:
            array = np.repeat(array, 3, axis=-1)
        return array if array.dtype == np.uint8 else min_max_to_uint8(array)
    try:
        with _open_within_pixel_limit(source) as image:
            image.load()
            return to_rgb(image)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise UnreadableImageError(f"{type(error).__name__}: {error}") from error
