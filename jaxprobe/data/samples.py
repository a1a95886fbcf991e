"""What a dataset layout yields before any image is decoded: samples, and inputs we had to skip."""

from __future__ import annotations

import dataclasses
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
    """A dataset read off disk: class names and samples per split, in a deterministic order."""

    class_names: list[str]
    splits: dict[str, list[Sample]]
    skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)


def is_image_file(path: Path) -> bool:
    """True for visible files with an image suffix (any case); hidden files such as ``._x.png`` are junk."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def read_rgb(source: ImageSource) -> np.ndarray:
    """Decode a sample to uint8 [H, W, 3]; grayscale and palette images are expanded to RGB."""
    if callable(source):
        array = np.asarray(source())
        if array.ndim == 2:
            array = array[..., None]
        if array.shape[-1] == 1:
            array = np.repeat(array, 3, axis=-1)
        return array.astype(np.uint8)
    try:
        with Image.open(source) as image:
            image.load()
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise UnreadableImageError(f"{type(error).__name__}: {error}") from error
