"""Linear probes over a whole regularisation grid, for a stack of sites at once.

Both linear probes work in the *span* of the training features. With centred training features X [N, D] and
an orthonormal basis V [D, r] of X's row space (r = min(N, D)), Z = X V has orthogonal columns
(Z^T Z = diag(s)), and because the L2 penalty is rotation invariant, an L2-penalised linear model on X equals the
same model on Z with W = V W_z. One eigendecomposition per site (of X^T X when N > D, of X X^T when N < D)
therefore serves ridge for every lambda in closed form and shrinks logistic regression to r dimensions.

Objectives (n = number of training rows, intercepts never penalised):
- ridge:    ||Y - X W - b||^2 + lambda ||W||^2                    (sklearn ``RidgeClassifier(alpha=lambda)``)
- logistic: mean_i CE(x_i W + b, y_i) + (lambda / 2) ||W||^2     (sklearn ``LogisticRegression(C=1/(lambda n))``)
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax

from jaxprobe.probes import lbfgs

# Eigenvalues below this fraction of the largest are treated as zero (the null space of centred data).
RELATIVE_EIGEN_FLOOR = 1e-6


def span_basis(x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Orthonormal basis V [D, r] of the (masked, centred) rows of x [N, D] and eigenvalues s [r] of Z^T Z."""
    x = x * mask[:, None]
    n, d = x.shape
    if n >= d:
        s, v = jnp.linalg.eigh(x.T @ x)
    else:
        s, u = jnp.linalg.eigh(x @ x.T)
        keep = s > RELATIVE_EIGEN_FLOOR * s[-1]
        v = (x.T @ u) * jnp.where(keep, jax.lax.rsqrt(jnp.where(keep, s, 1.0)), 0.0)
    keep = s > RELATIVE_EIGEN_FLOOR * s[-1]
    return v * keep, jnp.where(keep, s, 0.0)


def standardize(x_train: jax.Array, mask: jax.Array, *others: jax.Array) -> tuple[jax.Array, ...]:
    """Centre and scale by the masked training rows' statistics; constant features get scale 1."""
    count = mask.sum()
    mean = (x_train * mask[:, None]).sum(0) / count
    var = (((x_train - mean) ** 2) * mask[:, None]).sum(0) / count
    scale = jnp.where(var > 0, jnp.sqrt(var), 1.0)
    return tuple((x - mean) / scale for x in (x_train, *others))


def cholesky_span(x: jax.Array, mask: jax.Array, x_eval: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Span coordinates (Z, Z_eval) with Z Z^T = X X^T from a Cholesky factor, for N < D without ridge.

    Any Z with Z Z^T = X X^T is an orthogonal rotation of the eigenbasis coordinates, and L-BFGS (scaled identity
    start) is invariant to such rotations, so logistic fits match the eigenbasis ones at a tenth of the cost of
    ``eigh``. A jitter of ``RELATIVE_EIGEN_FLOOR`` x mean eigenvalue keeps the rank-deficient (centred) Gram
    matrix positive definite.
    """
    x = x * mask[:, None]
    gram = x @ x.T
    jitter = RELATIVE_EIGEN_FLOOR * jnp.trace(gram) / gram.shape[0]
    factor = jnp.linalg.cholesky(gram + jitter * jnp.eye(gram.shape[0], dtype=gram.dtype))
    z_eval = jax.scipy.linalg.solve_triangular(factor, (x_eval @ x.T).T, lower=True).T
    return factor, z_eval


def ridge_path(z: jax.Array, s: jax.Array, y_onehot: jax.Array, mask: jax.Array, lambdas: jax.Array,
               z_eval: jax.Array) -> jax.Array:
    """Decision values [L, M, C] on ``z_eval`` for every lambda; z = X V so Z^T Z = diag(s) (closed form)."""
    weights = mask[:, None]
    y_mean = (y_onehot * weights).sum(0) / weights.sum()
    projected = z.T @ ((y_onehot - y_mean) * weights)  # [r, C]
    shrink = 1.0 / (s[None, :] + lambdas[:, None])  # [L, r]
    return jnp.einsum("mr,lr,rc->lmc", z_eval, shrink, projected) + y_mean


@dataclasses.dataclass(frozen=True)
class SoftmaxRegression:
    """mean_i w_i CE(z_i W + b, y_i) / mean(w) + lambda/2 ||W||^2 with params [r + 1, C] (last row: b).

    The logits are carried along, so a line search needs one product Z d for all its step sizes.
    """

    z: jax.Array
    labels: jax.Array
    weights: jax.Array
    lam: jax.Array

    def _value(self, params: jax.Array, logits: jax.Array) -> jax.Array:
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, self.labels)
        return (losses * self.weights).sum() / self.weights.sum() + 0.5 * self.lam * jnp.sum(params[:-1] ** 2)

    def aux_of(self, params: jax.Array) -> jax.Array:
        return self.z @ params[:-1] + params[-1]

    def value_and_grad(self, params: jax.Array, logits: jax.Array) -> tuple[jax.Array, jax.Array]:
        residual = jax.nn.softmax(logits) - jax.nn.one_hot(self.labels, logits.shape[-1], dtype=logits.dtype)
        residual = residual * (self.weights / self.weights.sum())[:, None]
        grad = jnp.concatenate([self.z.T @ residual + self.lam * params[:-1], residual.sum(0, keepdims=True)])
        return self._value(params, logits), grad

    def along(self, params, logits, direction, steps):
        delta = self.aux_of(direction)  # the logits' change per unit step
        values = jax.vmap(lambda t: self._value(params + t * direction, logits + t * delta))(steps)
        return values, delta

    def moved(self, logits: jax.Array, delta: jax.Array, step: jax.Array) -> jax.Array:
        return logits + step * delta


@functools.partial(jax.jit, static_argnames=("num_classes", "max_iter"))
def logistic_path(z: jax.Array, labels: jax.Array, mask: jax.Array, lambdas: jax.Array, z_eval: jax.Array,
                  num_classes: int, max_iter: int = 100, tol: float = 1e-5):
    """Fit every lambda side by side from zero (vmapped: one product with Z serves all of them); returns logits
    [L, M, C] on ``z_eval``, objectives [L] and iteration counts [L].

    Warm starts along the path were measured 7x slower here: they serialise the lambdas, and near-separable fits
    at small lambda then run to ``max_iter`` while the whole batch waits.
    """
    weights = mask.astype(z.dtype)
    init = jnp.zeros((z.shape[1] + 1, num_classes), z.dtype)

    def fit_one(lam):
        state = lbfgs.minimize(SoftmaxRegression(z, labels, weights, lam), init, max_iter, tol)
        return z_eval @ state.params[:-1] + state.params[-1], state.value, state.count

    return jax.vmap(fit_one)(lambdas)
