"""Meshes and shardings: code is written once for 1 and N devices (and hosts).

The mesh has a ``data`` axis (extraction batches) and a ``probe`` axis (stacked probes). Probe stacks are padded
to a multiple of the ``probe`` axis so every device gets an equal share.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

PROBE_AXIS = "probe"
DATA_AXIS = "data"
COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"


def initialize_distributed() -> None:
    """Join a multi-host run when the launcher set ``JAX_COORDINATOR_ADDRESS`` (no-op on one host)."""
    if os.environ.get(COORDINATOR_ENV) and jax.process_count() == 1:
        jax.distributed.initialize()


def probe_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (all by default) with the ``probe`` axis."""
    devices = jax.devices()[: num_devices or len(jax.devices())]
    return Mesh(np.array(devices), (PROBE_AXIS,))


def data_mesh(num_devices: int | None = None) -> Mesh:
    devices = jax.devices()[: num_devices or len(jax.devices())]
    return Mesh(np.array(devices), (DATA_AXIS,))


def leading_axis_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Shard axis 0 over the mesh's single axis, replicate the rest."""
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
