"""Ridge probes over a whole lambda grid from one ``Span``: the refit in closed form, every fold by an identity.

Objective (intercept unpenalised): ||Y - X W - b||^2 + lambda ||W||^2 with one-hot targets Y, i.e. scikit-learn's
``RidgeClassifier(alpha=lambda)`` (its {-1, 1} targets give decision values 2 f - 1: the same argmax).

Folds without refitting: let H(lambda) be the hat matrix of the fit on all N training rows (intercept included).
Dropping a block h of rows and refitting gives, on those rows, exactly (Sherman-Morrison-Woodbury)

    y_h - f_h^(-h) = (I - H_hh)^-1 (y_h - f_h),

so each fold costs an [n_h, n_h] matrix and solve per lambda instead of a decomposition. I - H is formed
without cancellation: for N >= D it is I - Z_h diag(1 / (s + lambda)) Z_h^T - 11^T / N, well conditioned since
N > D leaves every row outside the others' span; for N < D (training rows interpolated at small lambda) it is
U_h diag(lambda / (s + lambda)) U_h^T over the kernel's eigenbasis with the intercept's direction left out
exactly (``jaxprobe.probes.span``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxprobe.probes.span import Span


def _centred(y: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    mean = (y * weights[:, None]).sum(0) / weights.sum()
    return (y - mean) * weights[:, None], mean


def refit(span: Span, y: jax.Array, mask: jax.Array, lambdas: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Decision values [L, N, C] on the training rows and [L, M, C] on the eval rows for targets y [N, C]."""
    centred, mean = _centred(y, mask)
    projected = span.z.T @ centred  # [r, C]
    shrink = 1.0 / (span.s[None, :] + lambdas[:, None])  # [L, r]
    train = jnp.einsum("nr,lr,rc->lnc", span.z, shrink, projected) + mean
    evaluated = jnp.einsum("mr,lr,rc->lmc", span.z_eval, shrink, projected) + mean
    return train, evaluated


def _complement_block(span: Span, rows: jax.Array, lam: jax.Array) -> jax.Array:
    """I - H_hh [n_h, n_h] for the held-out rows ``rows`` (padded entries are -1 and get identity rows)."""
    valid = rows >= 0
    rows = jnp.where(valid, rows, 0)
    if span.u is None:
        z_h = span.z[rows] * valid[:, None]
        inverse = jnp.where(span.s > 0, 1.0 / (span.s + lam), 0.0)
        hat = (z_h * inverse) @ z_h.T + jnp.outer(valid, valid) / span.z.shape[0]
        return jnp.eye(rows.shape[0], dtype=hat.dtype) - hat
    u_h = span.u[rows] * valid[:, None]
    weight = jnp.where(span.constant, 0.0, lam / (span.s + lam))
    return (u_h * weight) @ u_h.T + jnp.diag(~valid).astype(u_h.dtype)


def _residuals(span: Span, y: jax.Array, lambdas: jax.Array) -> jax.Array:
    """(I - H) y [L, N, C] for every lambda, without forming y - H y where that cancels (N < D)."""
    centred, _ = _centred(y, jnp.ones(y.shape[0], y.dtype))
    if span.u is None:
        fitted, _ = refit(span, y, jnp.ones(y.shape[0], y.dtype), lambdas)
        return y[None] - fitted
    projected = span.u.T @ centred  # [N, C]
    weight = jnp.where(span.constant, 0.0, lambdas[:, None] / (span.s + lambdas[:, None]))  # [L, N]
    return jnp.einsum("nk,lk,kc->lnc", span.u, weight, projected)


def held_out(span: Span, y: jax.Array, held: jax.Array, lambdas: jax.Array) -> jax.Array:
    """Decision values [F, L, n_h, C] on each fold's held-out rows ``held`` [F, n_h] (-1 = padding) of the fit on
    the fold's other training rows, for every lambda; y [N, C] are the targets of all N training rows."""
    residuals = _residuals(span, y, lambdas)

    def one(rows, lam, residual):
        valid = (rows >= 0)[:, None]
        index = jnp.where(rows >= 0, rows, 0)
        error = jnp.linalg.solve(_complement_block(span, rows, lam), residual[index] * valid)
        return y[index] - error

    per_lambda = jax.vmap(one, in_axes=(None, 0, 0))
    # Folds one after another: vmapped, every fold x lambda held its [n_h, r] block at once (N > D: ~2 GB for a
    # block of two chest-X-ray-shaped 3584-wide sites); the products are the same.
    return jax.lax.map(lambda rows: per_lambda(rows, lambdas, residuals), held)
