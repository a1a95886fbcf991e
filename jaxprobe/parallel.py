"""Meshes and shardings: code is written once for 1 and N devices, and 1 and N processes (hosts).

One extraction mesh has a ``data`` axis (batches) and a ``model`` axis (params split by a family's sharding
rules) over every device of every process; probe stacks use a 1-D ``probe`` mesh over this process's devices.
Probe stacks are padded to a multiple of the ``probe`` axis so every device gets an equal share.

Multi-process runs (several hosts, or several processes on one host) are described by the environment:
``JAX_COORDINATOR_ADDRESS`` (host:port of process 0), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``, or a cluster
that ``jax.distributed`` detects itself (SLURM, Open MPI, TPU pods). Every process runs the same program on the
same rows; each feeds only the rows its devices hold (``local_rows``), results are gathered to every process, and
process 0 alone writes files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxprobe.errors import ConfigError

PROBE_AXIS = "probe"
DATA_AXIS = "data"
MODEL_AXIS = "model"
COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES_ENV, PROCESS_ID_ENV = "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"
TIMEOUT_ENV = "JAXPROBE_DISTRIBUTED_TIMEOUT"  # seconds to wait for the other processes (default 300)
CLUSTER_ENVS = ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES")

SpecRules = Sequence[tuple[str, tuple[str | None, ...]]]


def _cluster_size() -> int:
    """Processes a cluster launcher started (1 when none is detected)."""
    for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return len(hosts.split(",")) if hosts else 1


def initialize_distributed() -> bool:
    """Join the multi-process run the environment describes (before any JAX computation); True if there is one.

    Idempotent: checks ``jax.distributed.is_initialized()`` (``process_count()`` would initialise the backend
    first, after which joining is impossible)."""
    if jax.distributed.is_initialized():
        return True
    timeout = int(os.environ.get(TIMEOUT_ENV, "300"))
    timeouts = dict(initialization_timeout=timeout, heartbeat_timeout_seconds=max(10, timeout // 3),
                    shutdown_timeout_seconds=timeout)
    if os.environ.get(COORDINATOR_ENV):
        missing = [name for name in (NUM_PROCESSES_ENV, PROCESS_ID_ENV) if not os.environ.get(name, "").isdigit()]
        if missing:
            raise ConfigError(f"{COORDINATOR_ENV} is set but {' and '.join(missing)} is not; a multi-process run "
                              f"needs all three (process 0 at {os.environ[COORDINATOR_ENV]}, N processes, this id)")
        jax.distributed.initialize(os.environ[COORDINATOR_ENV], int(os.environ[NUM_PROCESSES_ENV]),
                                   int(os.environ[PROCESS_ID_ENV]), **timeouts)
        return True
    if _cluster_size() > 1 and any(os.environ.get(name) for name in CLUSTER_ENVS):
        jax.distributed.initialize(**timeouts)
        return True
    return False


def is_primary() -> bool:
    """Process 0: the one that writes files."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process gets here (no-op with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def broadcast(value: int) -> int:
    """Process 0's ``value`` on every process."""
    if jax.process_count() == 1:
        return int(value)
    return int(multihost_utils.broadcast_one_to_all(np.int64(value)))


def gather(array: jax.Array) -> np.ndarray:
    """The whole of a (possibly multi-process) array on every process, as numpy."""
    if jax.process_count() == 1 or array.is_fully_addressable:
        return np.asarray(array)
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def local_rows(mesh: Mesh, global_batch: int) -> tuple[int, int]:
    """[start, stop) of the rows of a ``global_batch`` (padded to the ``data`` axis) this process's devices hold."""
    indices = batch_sharding(mesh, 1).addressable_devices_indices_map((global_batch,)).values()
    starts = [index[0].start or 0 for index in indices]
    stops = [global_batch if index[0].stop is None else index[0].stop for index in indices]
    return min(starts), max(stops)


def probe_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` of this process's devices (all by default), axis ``probe``."""
    devices = jax.local_devices()[: num_devices or len(jax.local_devices())]
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
