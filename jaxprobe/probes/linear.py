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

from jaxprobe.probes import lbfgs

# Eigenvalues below this fraction of the largest are treated as zero (the null space of centred data).
RELATIVE_EIGEN_FLOOR = 1e-6
# Logistic fits stop when L-BFGS predicts less than this relative decrease of the objective. Measured against
# tight solves: objective within ~1e-4 relative for lambda >= 1e-3, within ~1e-2 in the separable regime below.
DEFAULT_TOL = 1e-5


def span_coordinates(x: jax.Array, mask: jax.Array, x_eval: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Coordinates Z = X V [N, r] and Z_eval = X_eval V in an orthonormal eigenbasis V of the (masked, centred)
    rows of x [N, D], and the eigenvalues s [r] of Z^T Z (zero for the null space).

    N >= D: V diagonalises X^T X. N < D: with X X^T = U diag(s) U^T, V = X^T U s^-1/2 is never formed:
    Z = U s^1/2 and Z_eval = (X_eval X^T) U s^-1/2, which saves two [N, D] x [D, N]-sized products per fit.
    """
    x = x * mask[:, None]
    n, d = x.shape
    s, vectors = jnp.linalg.eigh(x.T @ x if n >= d else x @ x.T)
    keep = s > RELATIVE_EIGEN_FLOOR * s[-1]
    s = jnp.where(keep, s, 0.0)
    if n >= d:
        basis = vectors * keep
        return x @ basis, x_eval @ basis, s
    inverse_root = jnp.where(keep, jax.lax.rsqrt(jnp.where(keep, s, 1.0)), 0.0)
    return vectors * jnp.sqrt(s), (x_eval @ x.T) @ (vectors * inverse_root), s


def standardize(x_train: jax.Array, mask: jax.Array, *others: jax.Array) -> tuple[jax.Array, ...]:
    """Centre and scale by the masked training rows' statistics; constant features get scale 1."""
    count = mask.sum()
    mean = (x_train * mask[:, None]).sum(0) / count
    var = (((x_train - mean) ** 2) * mask[:, None]).sum(0) / count
    scale = jnp.where(var > 0, jnp.sqrt(var), 1.0)
    return tuple((x - mean) / scale for x in (x_train, *others))


def ridge_path(z: jax.Array, s: jax.Array, y_onehot: jax.Array, mask: jax.Array, lambdas: jax.Array,
               z_eval: jax.Array) -> jax.Array:
    """Decision values [L, M, C] on ``z_eval`` for every lambda; z = X V so Z^T Z = diag(s) (closed form)."""
    weights = mask[:, None]
    y_mean = (y_onehot * weights).sum(0) / weights.sum()
    projected = z.T @ ((y_onehot - y_mean) * weights)  # [r, C]
    shrink = 1.0 / (s[None, :] + lambdas[:, None])  # [L, r]
    return jnp.einsum("mr,lr,rc->lmc", z_eval, shrink, projected) + y_mean


def _cross_entropy(logits: jax.Array, onehot: jax.Array) -> jax.Array:
    """Per-row cross-entropy [..., N] of class-major logits [..., C, N].

    Class-major, with the class reductions unrolled into elementwise operations on [..., N] rows, because C is
    2-10: XLA:CPU reduces over a short axis slowly (the line search's objective evaluations, the bulk of an
    iteration, measured 5x faster this way).
    """
    rows = [logits[..., c, :] for c in range(logits.shape[-2])]
    top = functools.reduce(jnp.maximum, rows)
    total = functools.reduce(jnp.add, [jnp.exp(row - top) for row in rows])
    picked = functools.reduce(jnp.add, [row * onehot[c] for c, row in enumerate(rows)])
    return top + jnp.log(total) - picked


@dataclasses.dataclass(frozen=True)
class SoftmaxRegression:
    """sum_i w_i CE(z_i W + b, y_i) / sum(w) + lambda/2 ||W||^2 with params [r + 1, C] (last row: b).

    The logits are carried along (class-major, [C, N]), so a line search needs one product Z d for all its step
    sizes, and the penalty along a line is a quadratic in the step from three dot products.
    """

    z: jax.Array
    onehot: jax.Array  # [C, N]
    weights: jax.Array  # [N], summing to 1
    lam: jax.Array

    @classmethod
    def of(cls, z: jax.Array, labels: jax.Array, mask: jax.Array, lam: jax.Array, num_classes: int):
        onehot = jax.nn.one_hot(labels, num_classes, dtype=z.dtype).T
        return cls(z, onehot, mask.astype(z.dtype) / mask.sum(), lam)

    def aux_of(self, params: jax.Array) -> jax.Array:
        return jnp.einsum("nr,rc->cn", self.z, params[:-1]) + params[-1][:, None]

    def _loss(self, logits: jax.Array) -> jax.Array:
        return _cross_entropy(logits, self.onehot) @ self.weights

    def value_and_grad(self, params: jax.Array, logits: jax.Array) -> tuple[jax.Array, jax.Array]:
        residual = (jax.nn.softmax(logits, axis=0) - self.onehot) * self.weights  # [C, N]
        grad = jnp.concatenate([jnp.einsum("nr,cn->rc", self.z, residual) + self.lam * params[:-1],
                                residual.sum(1)[None]])
        return self._loss(logits) + 0.5 * self.lam * jnp.sum(params[:-1] ** 2), grad

    def along(self, params, logits, direction, steps):
        delta = self.aux_of(direction)  # the logits' change per unit step
        weights, cross, curvature = (jnp.sum(a * b) for a, b in
                                     ((params[:-1], params[:-1]), (params[:-1], direction[:-1]),
                                      (direction[:-1], direction[:-1])))
        losses = jax.vmap(lambda t: self._loss(logits + t * delta))(steps)
        return losses + 0.5 * self.lam * (weights + 2 * steps * cross + steps**2 * curvature), delta

    def moved(self, logits: jax.Array, delta: jax.Array, step: jax.Array) -> jax.Array:
        return logits + step * delta


def eigen_preconditioner(eigenvalues: jax.Array, count: jax.Array, lam: jax.Array, num_classes: int) -> jax.Array:
    """Inverse curvature [r + 1, 1] of the objective at W = 0 in the eigenbasis (Z^T Z = diag(s)).

    There the Hessian of the mean cross-entropy is diag(s) / n (x) (I/C - 11^T/C^2): per coordinate
    s / (n C) + lambda for class contrasts; the intercept row gets C. L-BFGS rescales and corrects it as the
    fit moves away from W = 0.
    """
    curvature = eigenvalues / (count * num_classes) + lam
    return jnp.concatenate([1.0 / curvature, jnp.full((1,), float(num_classes), eigenvalues.dtype)])[:, None]


@functools.partial(jax.jit, static_argnames=("num_classes", "max_iter", "tol"))
def logistic_path(z: jax.Array, labels: jax.Array, mask: jax.Array, lambdas: jax.Array, z_eval: jax.Array,
                  num_classes: int, max_iter: int = 100, tol: float = DEFAULT_TOL,
                  eigenvalues: jax.Array | None = None):
    """Fit every lambda side by side from zero (vmapped: one product with Z serves all of them); returns logits
    [L, M, C] on ``z_eval``, objectives [L] and iteration counts [L].

    ``eigenvalues`` (Z^T Z = diag(eigenvalues), i.e. Z in the eigenbasis) turn on the eigenbasis preconditioner.
    Warm starts along the path were measured 7x slower here: they serialise the lambdas, and near-separable fits
    at small lambda then run to ``max_iter`` while the whole batch waits.
    """
    init = jnp.zeros((z.shape[1] + 1, num_classes), z.dtype)

    def fit_one(lam):
        problem = SoftmaxRegression.of(z, labels, mask, lam, num_classes)
        preconditioner = (None if eigenvalues is None
                          else eigen_preconditioner(eigenvalues, mask.sum(), lam, num_classes))
        state = lbfgs.minimize(problem, init, max_iter, tol, preconditioner)
        return z_eval @ state.params[:-1] + state.params[-1], state.value, state.count

    return jax.vmap(fit_one)(lambdas)
