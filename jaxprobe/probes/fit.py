"""One jitted call fits a probe kind for S sites x K label sets x L lambdas and scores the eval rows.

The per-site eigendecomposition is shared by every label set and lambda (controls and permutation nulls reuse
it); sites are the vmapped, sharded axis.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxprobe.parallel import shard_leading
from jaxprobe.probes import linear

LINEAR_KINDS = ("ridge", "logistic")


def _site_scores(kind: str, x_fit, labels, mask, x_eval, lambdas, num_classes: int, max_iter: int):
    """Scores [K, L, M, C] of one site for K label sets."""
    x_fit, x_eval = linear.standardize(x_fit, mask, x_eval)
    basis, eigenvalues = linear.span_basis(x_fit, mask)
    z, z_eval = x_fit @ basis, x_eval @ basis
    if kind == "ridge":
        onehot = jax.nn.one_hot(labels, num_classes, dtype=z.dtype)
        return jax.vmap(lambda y: linear.ridge_path(z, eigenvalues, y, mask, lambdas, z_eval))(onehot)
    fit = functools.partial(linear.logistic_path, num_classes=num_classes, max_iter=max_iter)
    return jax.vmap(lambda y: fit(z, y, mask, lambdas, z_eval)[0])(labels)


@functools.partial(jax.jit, static_argnames=("kind", "num_classes", "max_iter"))
def _fit_eval(kind, x_fit, labels, mask, x_eval, lambdas, num_classes, max_iter):
    per_site = functools.partial(_site_scores, kind, num_classes=num_classes, max_iter=max_iter)
    return jax.vmap(per_site, in_axes=(0, None, None, 0, 0))(x_fit, labels, mask, x_eval, lambdas)


def fit_eval(kind: str, x_fit: np.ndarray, labels: np.ndarray, mask: np.ndarray, x_eval: np.ndarray,
             lambdas: np.ndarray, num_classes: int, mesh: Mesh | None = None, max_iter: int = 500) -> np.ndarray:
    """Scores [S, K, L, M, C] for sites x_fit [S, N, D] (rows with mask False ignored), labels [K, N].

    ``lambdas`` is [L] (the same grid for every site, in decreasing order for warm starts) or [S, L] (per site,
    e.g. each site's selected lambda). Ridge scores are decision values; logistic scores are logits.
    """
    if kind not in LINEAR_KINDS:
        raise ValueError(f"unknown linear probe kind {kind!r}; expected one of {LINEAR_KINDS}")
    sites = x_fit.shape[0]
    lambdas = np.broadcast_to(np.asarray(lambdas, np.float32), (sites, np.shape(lambdas)[-1]))
    scores = _fit_eval(kind, shard_leading(mesh, x_fit), jnp.asarray(labels), jnp.asarray(mask, jnp.float32),
                       shard_leading(mesh, x_eval), shard_leading(mesh, np.ascontiguousarray(lambdas)),
                       num_classes, max_iter)
    return np.asarray(scores)[:sites]
