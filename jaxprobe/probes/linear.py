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

import functools

import jax
import jax.numpy as jnp
import optax

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


def ridge_path(z: jax.Array, s: jax.Array, y_onehot: jax.Array, mask: jax.Array, lambdas: jax.Array,
               z_eval: jax.Array) -> jax.Array:
    """Decision values [L, M, C] on ``z_eval`` for every lambda; z = X V so Z^T Z = diag(s) (closed form)."""
    weights = mask[:, None]
    y_mean = (y_onehot * weights).sum(0) / weights.sum()
    projected = z.T @ ((y_onehot - y_mean) * weights)  # [r, C]
    shrink = 1.0 / (s[None, :] + lambdas[:, None])  # [L, r]
    return jnp.einsum("mr,lr,rc->lmc", z_eval, shrink, projected) + y_mean


def _logistic_objective(params: tuple[jax.Array, jax.Array], z, labels, weights, lam):
    w, b = params
    logits = z @ w + b
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return (losses * weights).sum() / weights.sum() + 0.5 * lam * jnp.sum(w * w)


def _lbfgs(objective, params, max_iter: int, tol: float):
    """Minimise a smooth convex objective with optax L-BFGS until the gradient norm falls below ``tol``."""
    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)

    def step(carry):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = solver.update(grad, state, params, value=value, grad=grad, value_fn=objective)
        return optax.apply_updates(params, updates), state

    def keep_going(carry):
        _, state = carry
        count = optax.tree.get(state, "count")
        grad = optax.tree.get(state, "grad")
        return (count == 0) | ((count < max_iter) & (optax.tree.norm(grad) >= tol))

    params, state = jax.lax.while_loop(keep_going, step, (params, solver.init(params)))
    return params, optax.tree.get(state, "count")


@functools.partial(jax.jit, static_argnames=("num_classes", "max_iter"))
def logistic_path(z: jax.Array, labels: jax.Array, mask: jax.Array, lambdas: jax.Array, z_eval: jax.Array,
                  num_classes: int, max_iter: int = 500, tol: float = 1e-5):
    """Fit along ``lambdas`` (largest first, each warm-started from the last); logits [L, M, C], objectives [L]."""
    weights = mask.astype(z.dtype)
    init = (jnp.zeros((z.shape[1], num_classes), z.dtype), jnp.zeros((num_classes,), z.dtype))

    def fit_one(params, lam):
        objective = functools.partial(_logistic_objective, z=z, labels=labels, weights=weights, lam=lam)
        params, iterations = _lbfgs(objective, params, max_iter, tol)
        w, b = params
        return params, (z_eval @ w + b, objective(params), iterations)

    _, (logits, objectives, iterations) = jax.lax.scan(fit_one, init, lambdas)
    return logits, objectives, iterations
