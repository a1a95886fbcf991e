"""The jitted programs of the probe engine, each over a stack of sites (vmapped, sharded over the ``probe`` axis).

Sites never talk to each other, so each device runs its own sites with ``shard_map`` (its own ``while_loop``s
stop when its own problems converge). Programs are split where shapes allow compiled code to be reused: the
decomposition depends on the feature width, the fits only on the span's shape (with N <= D, every width of a
cell gives [N, N] coordinates and shares one compiled fit).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxprobe.parallel import PROBE_AXIS, pad_to_multiple
from jaxprobe.probes import logistic, ridge
from jaxprobe.probes.span import Span, training_span


class Problems(NamedTuple):
    """The label sets and row weights fitted on one span (host arrays, shared by every site).

    ``labels``/``weights`` [P, N]: one logistic problem per row (folds, the refit, control label sets).
    ``ridge_labels`` [K, N]: label sets ridge is refitted on, over the rows with ``rows`` [N] = 1 (0: padding).
    ``held`` [F, H]: each fold's held-out rows (-1 pads), for ridge's held-out identity ([0, H] when the folds
    have spans of their own).
    """

    labels: np.ndarray
    weights: np.ndarray
    ridge_labels: np.ndarray
    rows: np.ndarray
    held: np.ndarray


class Fits(NamedTuple):
    """Per site: ridge decision values on held-out fold rows [F, Lr, H, C], on the fitted rows [K, Lr, N, C] and
    on the eval rows [K, Lr, M, C]; the logistic path (``logistic.PathResult``, [P, Ll, ...])."""

    ridge_held: jax.Array
    ridge_train: jax.Array
    ridge_eval: jax.Array
    logistic: logistic.PathResult


def _sharded(local, mesh: Mesh | None, per_site: tuple[bool, ...]):
    """``local`` split over the mesh along axis 0 of the arguments marked ``per_site`` (the rest replicated)."""
    if mesh is None:
        return local
    specs = tuple(PartitionSpec(PROBE_AXIS) if sited else PartitionSpec() for sited in per_site)
    return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=PartitionSpec(PROBE_AXIS), check_vma=False)


def place(mesh: Mesh | None, array: np.ndarray) -> jax.Array:
    """Sites (axis 0) padded to a multiple of the devices and split over them."""
    if mesh is None:
        return jax.device_put(array)
    padded = pad_to_multiple(np.asarray(array), mesh.devices.size)
    return jax.device_put(padded, NamedSharding(mesh, PartitionSpec(PROBE_AXIS)))


@functools.partial(jax.jit, static_argnames=("mesh",))
def spans(x_train: jax.Array, mask: jax.Array, x_eval: jax.Array, mesh: Mesh | None = None) -> Span:
    """``training_span`` of every site: x_train [S, N, D] (rows with mask [N] = 0 ignored), x_eval [S, M, D]."""
    local = jax.vmap(training_span, in_axes=(0, None, 0))
    return _sharded(local, mesh, (True, False, True))(x_train, mask, x_eval)


def _fit_site(span: Span, labels, weights, ridge_labels, rows, held, ridge_lambdas, logistic_lambdas, *, kinds,
              num_classes, max_iter, tol) -> Fits:
    empty = jnp.zeros((0,), span.z.dtype)
    ridge_held, ridge_train, ridge_eval = empty, empty, empty
    if "ridge" in kinds:
        onehot = jax.nn.one_hot(ridge_labels, num_classes, dtype=span.z.dtype)  # [K, N, C]
        ridge_train, ridge_eval = jax.vmap(lambda y: ridge.refit(span, y, rows, ridge_lambdas))(onehot)
        if held.shape[0]:
            ridge_held = ridge.held_out(span, onehot[0], held, ridge_lambdas)
    path = logistic.PathResult(*(empty,) * len(logistic.PathResult._fields))
    if "logistic" in kinds:
        path = logistic.logistic_path(span.z, span.z_eval, labels, weights, logistic_lambdas, num_classes,
                                      max_iter, tol)
    return Fits(ridge_held, ridge_train, ridge_eval, path)


@functools.partial(jax.jit, static_argnames=("kinds", "num_classes", "max_iter", "tol", "mesh"))
def fit(span: Span, problems: Problems, ridge_lambdas: jax.Array, logistic_lambdas: jax.Array, *, kinds,
        num_classes: int, max_iter: int, tol: float, mesh: Mesh | None = None) -> Fits:
    """Every probe of ``kinds`` on every site's span; lambdas are decreasing grids shared by all sites."""
    site = functools.partial(_fit_site, kinds=kinds, num_classes=num_classes, max_iter=max_iter, tol=tol)
    local = jax.vmap(site, in_axes=(0, *(None,) * 7))
    args = (span, *problems, ridge_lambdas, logistic_lambdas)
    return _sharded(local, mesh, (True,) + (False,) * (len(args) - 1))(*args)


@functools.partial(jax.jit, static_argnames=("num_classes", "mesh"))
def _certify(z, params, labels, weights, lambdas, num_classes: int, mesh: Mesh | None = None):
    local = jax.vmap(functools.partial(logistic.certify, num_classes=num_classes), in_axes=(0, 0, None, None, None))
    return _sharded(local, mesh, (True, True, False, False, False))(z, params, labels, weights, lambdas)


def certify(z: jax.Array, params: jax.Array, labels: np.ndarray, weights: np.ndarray, lambdas: np.ndarray,
            num_classes: int, mesh: Mesh | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``logistic.certify`` for every site (float64, traced with x64 enabled for this program only): intercept
    shifts [S, P, L, C], objectives and certified gaps [S, P, L]."""
    with jax.enable_x64(True):
        result = _certify(z, params, jnp.asarray(labels), jnp.asarray(weights, jnp.float64),
                          jnp.asarray(lambdas, jnp.float64), num_classes, mesh)
        return tuple(np.asarray(part) for part in result)
