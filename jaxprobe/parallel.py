"""Meshes and shardings: code is written once for 1 and N devices (and hosts).

One extraction mesh has a ``data`` axis (batches) and a ``model`` axis (params split by a family's sharding
rules); probe stacks use a 1-D ``probe`` mesh over the same devices. Probe stacks are padded to a multiple of the
``probe`` axis so every device gets an equal share.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxprobe.errors import ConfigError

PROBE_AXIS = "probe"
DATA_AXIS = "data"
MODEL_AXIS = "model"
COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"

SpecRules = Sequence[tuple[str, tuple[str | None, ...]]]


def initialize_distributed() -> None:
    """Join a multi-host run when the launcher set ``JAX_COORDINATOR_ADDRESS`` (no-op on one host)."""
    if os.environ.get(COORDINATOR_ENV) and jax.process_count() == 1:
        jax.distributed.initialize()


def probe_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (all by default) with the ``probe`` axis."""
    devices = jax.devices()[: num_devices or len(jax.devices())]
    return Mesh(np.array(devices), (PROBE_AXIS,))


def make_mesh(data: int | None = None, model: int = 1) -> Mesh:
    """The extraction mesh: ``data`` x ``model`` devices (``data`` None: every device not on the model axis)."""
    total = len(jax.devices())
    if model < 1 or total % model:
        raise ConfigError(f"mesh.model={model} must be a positive divisor of the {total} devices")
    data = data or total // model
    if data < 1 or data * model > total:
        raise ConfigError(f"mesh.data={data} x mesh.model={model} needs {data * model} devices; {total} are available")
    return Mesh(np.array(jax.devices()[: data * model]).reshape(data, model), (DATA_AXIS, MODEL_AXIS))


def data_mesh(num_devices: int | None = None) -> Mesh:
    """All (or the first ``num_devices``) devices on the ``data`` axis, params replicated."""
    return make_mesh(num_devices or len(jax.devices()), 1)


def fitting_spec(mesh: Mesh, shape: Sequence[int], entries: Sequence[str | None]) -> PartitionSpec:
    """``entries`` as a PartitionSpec, replicating each dimension its mesh axis does not divide evenly (e.g. the
    Qwen2.5-VL vision MLP width 3420 over 8 devices)."""
    fitted = [axis if axis is None or dim % mesh.shape[axis] == 0 else None
              for dim, axis in zip(shape, entries, strict=True)]
    return PartitionSpec(*fitted)


def param_sharding(mesh: Mesh, rules: SpecRules, path: tuple[str, ...], shape: Sequence[int]) -> NamedSharding:
    """The sharding of one param leaf: the first rule whose regex matches its '/'-joined path, else replicated."""
    joined = "/".join(path)
    for pattern, entries in rules:
        if re.fullmatch(pattern, joined) and len(entries) == len(shape):
            return NamedSharding(mesh, fitting_spec(mesh, shape, entries))
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Axis 0 over ``data``, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS, *([None] * (ndim - 1))))


def leading_axis_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Shard axis 0 over the mesh's first axis, replicate the rest."""
    return NamedSharding(mesh, PartitionSpec(mesh.axis_names[0], *([None] * (ndim - 1))))


def pad_to_multiple(array: np.ndarray, multiple: int) -> np.ndarray:
    """Pad axis 0 with copies of the last entry up to a multiple (copies keep the math finite)."""
    extra = (-array.shape[0]) % multiple
    if not extra:
        return array
    return np.concatenate([array, np.repeat(array[-1:], extra, axis=0)])


def shard_leading(mesh: Mesh | None, array: np.ndarray) -> jax.Array:
    """Place ``array`` with axis 0 split over ``mesh`` (padded first), or on the default device."""
    if mesh is None:
        return jax.device_put(array)
    padded = pad_to_multiple(array, mesh.devices.size)
    return jax.device_put(padded, leading_axis_sharding(mesh, padded.ndim))
