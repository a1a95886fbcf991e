"""Which size each image is fed at, and loading it at that size.

``capture.resolution`` is either a side length (every image squashed to one square: one token count, one
compilation) or ``"native"``: each image keeps its aspect ratio within the family's pixel budget
(``FamilyProcessor.native_size``). Native sizes are floored to a coarse grid of ``capture.bucket_step`` image
tokens per side, so a dataset of arbitrary sizes falls into a bounded number of buckets, one compilation each:
at most the number of (a, b) with a * b <= budget / (unit x step)^2 in the worst case, and in practice one per
distinct aspect ratio class (the manifest records every bucket and its image count). Flooring never leaves the
processor's budget, and the result is a size the processor keeps as it is.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds
from PIL import Image

from jaxprobe.errors import ConfigError

NATIVE = "native"
Size = tuple[int, int]  # (height, width)


def check_resolution(resolution: Any, bucket_step: int) -> None:
    """``capture.resolution`` is a positive side length or "native"; ``capture.bucket_step`` >= 1."""
    if resolution != NATIVE and not (isinstance(resolution, int) and not isinstance(resolution, bool)
                                     and resolution >= 1):
        raise ConfigError(f"capture.resolution={resolution!r} must be a side length in pixels (>= 1) or 'native'")
    if bucket_step < 1:
        raise ConfigError(f"capture.bucket_step={bucket_step} must be >= 1 (image tokens per bucket side)")


def stored_sizes(sources: dict[str, Any], index: pd.DataFrame) -> np.ndarray:
    """[N, 2] (height, width) of every row's stored image, from the PNG headers (no pixels decoded)."""
    sizes = np.empty((len(index), 2), np.int64)
    for i, (split, position) in enumerate(zip(index["split_source"], index["position"], strict=True)):
        encoded = sources[split][int(position)]["image"]
        width, height = Image.open(io.BytesIO(encoded)).size
        sizes[i] = height, width
    return sizes


def bucket_size(processor: Any, height: int, width: int, step: int) -> Size:
    """The native size floored to multiples of ``step`` x the processor's unit, then made a processor fixed point."""
    native_h, native_w = processor.native_size(height, width)
    quantum = processor.size_unit * step
    floored = (max(quantum, native_h // quantum * quantum), max(quantum, native_w // quantum * quantum))
    return tuple(int(s) for s in processor.native_size(*floored))


def target_sizes(resolution: Any, processor: Any, sizes: np.ndarray, step: int) -> list[Size]:
    """The (height, width) each row is fed at."""
    if resolution != NATIVE:
        return [(int(resolution), int(resolution))] * len(sizes)
    cache: dict[Size, Size] = {}
    targets = []
    for height, width in sizes.tolist():
        if (height, width) not in cache:
            cache[(height, width)] = bucket_size(processor, height, width, step)
        targets.append(cache[(height, width)])
    return targets


def data_sources(builder: Any, decode: bool = True) -> dict[str, Any]:
    """One random-access source per split (pixels decoded, or left as encoded bytes)."""
    decoders = None if decode else {"image": tfds.decode.SkipDecoding()}
    return {split: builder.as_data_source(split, decoders=decoders) for split in builder.info.splits}


def image_loader(sources: dict[str, Any], index: pd.DataFrame, sizes: Sequence[Size]):
    """A function row -> uint8 RGB [H, W, 3] resized (bicubic) to that row's target size."""

    def load(row: int) -> np.ndarray:
        record = index.iloc[row]
        pixels = sources[record["split_source"]][int(record["position"])]["image"]
        height, width = sizes[row]
        image = Image.fromarray(pixels)
        return np.asarray(image if image.size == (width, height) else image.resize((width, height),
                                                                                  Image.Resampling.BICUBIC))

    return load
