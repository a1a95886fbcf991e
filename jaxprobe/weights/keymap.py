"""The contract between a model family's HuggingFace tensor names and our Flax parameter tree.

A family provides a ``KeyMap``: for every tensor name in a checkpoint it says which leaves of our params tree the
tensor fills and how (transpose, reshape, slice of a fused tensor), and at which row of a stacked leaf (scanned
layers keep all layers of one parameter in one [L, ...] array). Transforms know their output shape, so a whole
checkpoint is checked against the config from the safetensors headers before any tensor is read.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

ParamPath = tuple[str, ...]


class Transform(Protocol):
    """A pure array -> array function that also maps shapes (views where possible: no copy until sliced)."""

    def __call__(self, array: np.ndarray) -> np.ndarray: ...

    def shape(self, shape: tuple[int, ...]) -> tuple[int, ...]: ...


@dataclasses.dataclass(frozen=True)
class Identity:
    """Leave a tensor as stored (biases, norm scales, embeddings)."""

    def __call__(self, array: np.ndarray) -> np.ndarray:
        return array

    def shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(shape)


@dataclasses.dataclass(frozen=True)
class TransposeLinear:
    """torch ``Linear.weight`` is [out, in]; flax ``Dense.kernel`` is [in, out]."""

    def __call__(self, array: np.ndarray) -> np.ndarray:
        return array.T

    def shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(reversed(shape))


@dataclasses.dataclass(frozen=True)
class FlattenConvKernel:
    """A conv weight [D, C, *kernel] applied to non-overlapping patches == a Dense kernel [C * prod(kernel), D]."""

    def __call__(self, array: np.ndarray) -> np.ndarray:
        return array.reshape(array.shape[0], -1).T

    def shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (int(np.prod(shape[1:])), shape[0])


identity, transpose_linear, flatten_conv_kernel = Identity(), TransposeLinear(), FlattenConvKernel()


@dataclasses.dataclass(frozen=True)
class ParamTarget:
    """One leaf of our params tree filled from (part of) one checkpoint tensor.

    ``layer``: the row of a stacked [L, ...] leaf this tensor fills (None: the tensor is the whole leaf).
    """

    path: ParamPath
    transform: Transform = identity
    layer: int | None = None


class KeyMap(Protocol):
    """Maps checkpoint tensor names to parameter targets for one model family and config."""

    def targets(self, name: str) -> list[ParamTarget] | None:
        """Targets for ``name``; ``[]`` for a known tensor we deliberately skip; ``None`` if unexpected."""
        ...
