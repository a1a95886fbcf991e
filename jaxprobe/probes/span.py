"""One eigendecomposition of a site's training rows, shared by every fold, lambda, label set and probe kind.

Both linear probes work in the *span* of the training features. With standardised, centred training rows
X [N, D] and an orthonormal basis V [D, r] of X's row space, Z = X V has orthogonal columns (Z^T Z = diag(s)),
and because the L2 penalty is rotation invariant, an L2-penalised linear model on X equals the same model on Z
with W = V W_z.

Why one decomposition serves every fold (with training-set scaling, ``probe.fold_scaling = "train"``): a fold's
probe is fitted on a subset of the training rows, with an unpenalised intercept. Its optimum W lies in the span
of the fold rows' deviations from their mean, which lies in the span of the (centred) training rows, i.e. in V's
span: so the fold's problem in Z coordinates (rows restricted to the fold, intercept free) has the same optimum
and the same objective as the problem in X. Ridge gets every fold from the whole-training-set fit by the
leave-a-block-out identity (``jaxprobe.probes.ridge``), logistic regression simply weights the rows of the
fold. With per-fold scaling each fold sees differently scaled features, so each fold needs its own
decomposition (``fold_scaling = "fold"``, as a scikit-learn ``StandardScaler`` pipeline inside cross-validation).

N > D: V diagonalises X^T X (one D x D Gram and eigh). N <= D: with the kernel X X^T = U diag(s) U^T,
V = X^T U s^-1/2 is never formed: Z = U s^1/2 and Z_eval = (X_eval X^T) U s^-1/2. Centred rows make
1/sqrt(N) an exact eigenvector of X X^T (eigenvalue 0: the intercept's direction); a Householder reflection that
maps it to the last axis splits it off exactly before the eigh, so ridge can drop that direction exactly instead
of subtracting 11^T/N from a nearly equal projector (which cancels catastrophically in float32 when N < D).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

# Eigenvalues below this fraction of the largest are treated as zero (the null space of centred data).
RELATIVE_EIGEN_FLOOR = 1e-6


class Span(NamedTuple):
    """A site's training rows in an orthonormal eigenbasis of their row space.

    ``z`` [N, r] and ``z_eval`` [M, r]: coordinates of the training and evaluation rows; ``s`` [r]: Z^T Z =
    diag(s) (zero for dropped directions). ``u`` [N, N] (N < D only, else None): the kernel's full eigenbasis,
    with ``constant`` [N] marking the deflated direction 1/sqrt(N) -- ridge's held-out identities need the null
    space that ``z`` leaves out.
    """

    z: jax.Array
    z_eval: jax.Array
    s: jax.Array
    u: jax.Array | None
    constant: jax.Array | None


def standardize(x_train: jax.Array, mask: jax.Array, *others: jax.Array) -> tuple[jax.Array, ...]:
    """Centre and scale by the masked training rows' statistics; constant features get scale 1. Masked-out rows
    of ``x_train`` come back as zeros."""
    count = mask.sum()
    mean = (x_train * mask[:, None]).sum(0) / count
    var = (((x_train - mean) ** 2) * mask[:, None]).sum(0) / count
    scale = jnp.where(var > 0, jnp.sqrt(var), 1.0)
    return ((x_train - mean) / scale * mask[:, None], *((x - mean) / scale for x in others))


def _feature_space(x: jax.Array, x_eval: jax.Array) -> Span:
    s, vectors = jnp.linalg.eigh(x.T @ x)
    keep = s > RELATIVE_EIGEN_FLOOR * s[-1]
    basis = vectors * keep
    return Span(x @ basis, x_eval @ basis, jnp.where(keep, s, 0.0), None, None)


def _reflect_out(kernel: jax.Array, direction: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(H K H, v) for the Householder reflection H = I - 2 v v^T that maps the unit vector ``direction`` to
    +-e_N (O(N^2): H is never formed)."""
    n = kernel.shape[0]
    last = jnp.zeros(n, kernel.dtype).at[-1].set(1.0)
    v = direction + jnp.where(direction[-1] >= 0, 1.0, -1.0) * last
    v = v / jnp.linalg.norm(v)
    kv = kernel @ v
    reflected = kernel - 2 * jnp.outer(v, kv) - 2 * jnp.outer(kv, v) + 4 * (v @ kv) * jnp.outer(v, v)
    return reflected, v


def _sample_space(x: jax.Array, mask: jax.Array, x_eval: jax.Array) -> Span:
    n = x.shape[0]
    reflected, v = _reflect_out(x @ x.T, mask / jnp.sqrt(mask.sum()))
    s, vectors = jnp.linalg.eigh(reflected[:-1, :-1])
    keep = s > RELATIVE_EIGEN_FLOOR * s[-1]
    s = jnp.concatenate([jnp.where(keep, s, 0.0), jnp.zeros(1, s.dtype)])
    keep = jnp.concatenate([keep, jnp.zeros(1, bool)])
    block = jnp.zeros((n, n), x.dtype).at[:-1, :-1].set(vectors).at[-1, -1].set(1.0)
    u = block - 2 * jnp.outer(v, v @ block)  # H block: the last column is the constant direction
    inverse_root = jnp.where(keep, jax.lax.rsqrt(jnp.where(keep, s, 1.0)), 0.0)
    constant = jnp.arange(n) == n - 1
    return Span(u * jnp.sqrt(s), (x_eval @ x.T) @ (u * inverse_root), s, u, constant)


def training_span(x_train: jax.Array, mask: jax.Array, x_eval: jax.Array) -> Span:
    """Standardise with the masked training rows' statistics and decompose them (rows with mask 0 get zero
    coordinates and never count)."""
    x, x_eval = standardize(x_train, mask, x_eval)
    n, d = x.shape
    return _feature_space(x, x_eval) if n > d else _sample_space(x, mask, x_eval)
