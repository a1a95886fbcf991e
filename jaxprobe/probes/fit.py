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


def _site_scores(kinds: tuple[str, ...], x_fit, labels, mask, x_eval, lambdas, num_classes: int, max_iter: int,
                 tol: float):
    """Scores [K, L, M, C] per kind of one site for K label sets; one eigendecomposition serves every kind.

    In the eigenbasis ridge has every lambda in closed form and logistic regression gets an exact diagonal
    preconditioner (it reaches scikit-learn's optimum at small lambda, where unpreconditioned fits stop early).
    """
    x_fit, x_eval = linear.standardize(x_fit, mask, x_eval)
    z, z_eval, eigenvalues = linear.span_coordinates(x_fit, mask, x_eval)
    scores = []
    for kind, lams in zip(kinds, lambdas, strict=True):
        if kind == "ridge":
            onehot = jax.nn.one_hot(labels, num_classes, dtype=z.dtype)
            scores.append(jax.vmap(lambda y, lams=lams: linear.ridge_path(z, eigenvalues, y, mask, lams, z_eval))(
                onehot))
        else:
            fit = functools.partial(linear.logistic_path, z, mask=mask, lambdas=lams, z_eval=z_eval,
                                    num_classes=num_classes, max_iter=max_iter, tol=tol, eigenvalues=eigenvalues)
            scores.append(jax.vmap(lambda y, fit=fit: fit(labels=y)[0])(labels))
    return tuple(scores)


@functools.partial(jax.jit, static_argnames=("kinds", "num_classes", "max_iter", "tol"))
def _fit_eval(kinds, x_fit, labels, mask, x_eval, lambdas, num_classes, max_iter, tol):
    per_site = functools.partial(_site_scores, kinds, num_classes=num_classes, max_iter=max_iter, tol=tol)
    return jax.vmap(per_site, in_axes=(0, None, None, 0, 0))(x_fit, labels, mask, x_eval, lambdas)


def fit_eval(kinds: dict[str, np.ndarray], x_fit: np.ndarray, labels: np.ndarray, mask: np.ndarray,
             x_eval: np.ndarray, num_classes: int, mesh: Mesh | None = None,
             max_iter: int = 100, tol: float = linear.DEFAULT_TOL) -> dict[str, np.ndarray]:
    """Scores {kind: [S, K, L, M, C]} for sites x_fit [S, N, D] (rows with mask False ignored), labels [K, N].

    ``kinds`` maps each probe kind to its lambdas: [L] (one grid for every site, decreasing) or [S, L] (per site,
    e.g. each site's selected lambda). Ridge scores are decision values; logistic scores are logits. ``max_iter``
    and ``tol`` bound each logistic fit (see ``jaxprobe.probes.lbfgs``).
    """
    unknown = set(kinds) - set(LINEAR_KINDS)
    if unknown:
        raise ValueError(f"unknown linear probe kinds {sorted(unknown)}; expected some of {LINEAR_KINDS}")
    sites = x_fit.shape[0]
    names = tuple(kinds)
    lambdas = tuple(
        shard_leading(mesh, np.ascontiguousarray(np.broadcast_to(np.asarray(kinds[k], np.float32),
                                                                 (sites, np.shape(kinds[k])[-1]))))
        for k in names
    )
    scores = _fit_eval(names, shard_leading(mesh, x_fit), jnp.asarray(labels), jnp.asarray(mask, jnp.float32),
                       shard_leading(mesh, x_eval), lambdas, num_classes, max_iter, tol)
    return {kind: np.asarray(value)[:sites] for kind, value in zip(names, scores, strict=True)}
