"""The contract between a model family's HuggingFace tensor names and our Flax parameter tree.

A family provides a ``KeyMap``: for every tensor name in a checkpoint it says which leaves of our params
tree the tensor fills and how (transpose, reshape, slice of a fused tensor). Keeping this a small, pure,
per-tensor function is what lets the loader stream a checkpoint one tensor at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

import numpy as np

ParamPath = tuple[str, ...]
Transform = Callable[[np.ndarray], np.ndarray]


def identity(array: np.ndarray) -> np.ndarray:
    """Leave a tensor as stored (biases, norm scales, embeddings)."""
    return array


def transpose_linear(array: np.ndarray) -> np.ndarray:
    """torch ``Linear.weight`` is [out, in]; flax ``Dense.kernel`` is [in, out]."""
    return np.ascontiguousarray(array.T)


@dataclasses.dataclass(frozen=True)
class ParamTarget:
    """One leaf of our params tree filled from (part of) one checkpoint tensor."""

    path: ParamPath
    transform: Transform = identity


class KeyMap(Protocol):
    """Maps checkpoint tensor names to parameter targets for one model family and config."""

    def targets(self, name: str) -> list[ParamTarget] | None:
        """Targets for ``name``; ``[]`` for a known tensor we deliberately skip; ``None`` if unexpected."""
        ...
