"""Multinomial L2 logistic probes along a lambda path, many problems sharing one ``Span``.

Objective (weights w_i summing to 1, intercept b unpenalised):
    P(W, b) = sum_i w_i CE(z_i W + b, y_i) + lambda/2 ||W||^2
i.e. scikit-learn's ``LogisticRegression(C = 1 / (lambda * n))`` with w_i = 1/n on the fitted rows. Folds, the
refit and control label sets are problems on the same coordinates Z that differ only in their row weights and
labels: one product Z [N, r] x [r, problems x C] serves all of them.

Path: lambdas are solved largest first, each warm-started from the previous solution with the L-BFGS curvature
pairs carried over (corrected exactly for the change of lambda: y += (lambda' - lambda) s). Small lambdas, where
cold starts crawled, start next to their optimum.

Certified stopping: with the dual of the problem (q_i in the simplex, sum_i w_i q_i = the class prior),
    D(q) = sum_i w_i H(q_i) - ||Z^T A||^2 / (2 lambda),   A_i = w_i (q_i - e_{y_i}),
every D(q) <= min P. The dual point is built from the current probabilities p_i, mixed with a constant
distribution just enough to satisfy the intercept's constraint (q_i = (1 - t) p_i + t s); by concavity of the
entropy, the bound P - D needs no more than dot products of quantities the gradient already has. A fit stops
when P - D <= tol * P: its objective is then within ``tol`` relative of the optimum (``jaxprobe.probes.lbfgs``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxprobe.probes import lbfgs

# The default relative optimality a logistic fit is certified to (probe.tol): objective within 1e-4 of the optimum.
DEFAULT_TOL = 1e-4
# Iterations stop when the gap *estimate* is below this fraction of tol: measured, the certified gap at the end
# point is within ~1.5x of the estimate, so the margin lets nearly every fit certify at tol.
ESTIMATE_MARGIN = 0.5
TINY = 1e-30


class _Rows(NamedTuple):
    """Per-row softmax terms, computed so that confidently classified rows keep their tiny losses and residuals
    (float32 rounds 1 + 1e-8 to 1: the loss of such a row is log1p(others), not log(1 + others))."""

    exps: jax.Array  # [..., C, N] exp(logit - top); the first top class gets exactly 1
    total: jax.Array  # [..., N] 1 + others
    not_label: jax.Array  # sum of exps over the classes other than the label
    loss: jax.Array  # cross-entropy per row


def _rows(logits: jax.Array, onehot: jax.Array) -> _Rows:
    """From class-major logits [..., C, N] and labels [C, N]."""
    top = logits.max(-2, keepdims=True)
    on_top = logits == top
    first = on_top & (jnp.cumsum(on_top, axis=-2) == 1)
    exps = jnp.exp(logits - top)
    others = jnp.where(first, 0.0, exps).sum(-2)
    label_on_top = (onehot * first).sum(-2) > 0
    not_label = jnp.where(label_on_top, others, 1.0 + others - (onehot * exps).sum(-2))
    picked = (onehot * logits).sum(-2)
    return _Rows(exps, 1.0 + others, not_label, (top[..., 0, :] - picked) + jnp.log1p(others))


def _residual(terms: _Rows, onehot: jax.Array) -> jax.Array:
    """softmax - onehot [C, N], the label's entry as -(sum of the other classes) to keep its precision."""
    return jnp.where(onehot > 0, -terms.not_label[..., None, :], terms.exps) / terms.total[..., None, :]


def _entropy(p: jax.Array) -> jax.Array:
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))


@dataclasses.dataclass(frozen=True)
class SoftmaxRegression:
    """P(W, b) with params [r + 1, C] (last row: b). The logits (class-major, [C, N]) are carried along, so a
    line search needs one product Z d for all its step sizes, and the penalty along a line is a quadratic in the
    step from three dot products."""

    z: jax.Array
    onehot: jax.Array  # [C, N]
    weights: jax.Array  # [N], summing to 1
    lam: jax.Array

    @classmethod
    def of(cls, z: jax.Array, labels: jax.Array, weights: jax.Array, lam: jax.Array, num_classes: int):
        onehot = jax.nn.one_hot(labels, num_classes, dtype=z.dtype).T
        return cls(z, onehot, weights.astype(z.dtype) / weights.sum(), lam.astype(z.dtype))

    def aux_of(self, params: jax.Array) -> jax.Array:
        return jnp.einsum("nr,rc->cn", self.z, params[:-1]) + params[-1][:, None]

    def _loss(self, logits: jax.Array) -> jax.Array:
        return _rows(logits, self.onehot).loss @ self.weights

    def parts(self, params: jax.Array, logits: jax.Array):
        """(value, loss, gradient of the loss w.r.t. W [r, C] and b [C], curvature of the loss along b [C])."""
        terms = _rows(logits, self.onehot)
        loss = terms.loss @ self.weights
        residual = _residual(terms, self.onehot) * self.weights  # [C, N]
        probs = terms.exps / terms.total
        intercept_curvature = (probs * (1 - probs)) @ self.weights
        value = loss + 0.5 * self.lam * jnp.sum(params[:-1] ** 2)
        return value, loss, jnp.einsum("nr,cn->rc", self.z, residual), residual.sum(1), intercept_curvature

    def evaluate(self, params: jax.Array, logits: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Value, gradient and an estimate of value - optimum: ||grad_W||^2 / (2 lambda) (the duality gap with
        the intercept's constraint ignored) plus the Newton decrement of the intercept. ``certify`` bounds it."""
        value, _, loss_grad, intercept_grad, curvature = self.parts(params, logits)
        weight_grad = loss_grad + self.lam * params[:-1]
        estimate = (jnp.sum(weight_grad**2) / (2 * self.lam)
                    + 0.5 * jnp.sum(intercept_grad**2 / jnp.maximum(curvature, TINY)))
        return value, jnp.concatenate([weight_grad, intercept_grad[None]]), estimate

    def along(self, params, logits, direction, steps):
        delta = self.aux_of(direction)  # the logits' change per unit step
        weights, cross, curvature = (jnp.sum(a * b) for a, b in
                                     ((params[:-1], params[:-1]), (params[:-1], direction[:-1]),
                                      (direction[:-1], direction[:-1])))
        losses = jax.vmap(lambda t: self._loss(logits + t * delta))(steps)
        return losses + 0.5 * self.lam * (weights + 2 * steps * cross + steps**2 * curvature), delta

    def moved(self, logits: jax.Array, delta: jax.Array, step: jax.Array) -> jax.Array:
        return logits + step * delta


def preconditioner(z: jax.Array, weights: jax.Array, lam: jax.Array, logits: jax.Array) -> jax.Array:
    """Inverse curvature [r + 1, C] of the objective along each coordinate of Z and class, for a warm start with
    these ``logits``.

    The Hessian of the weighted cross-entropy has the diagonal sum_i w_i p_ic (1 - p_ic) z_ij^2 (+ lambda); at
    W = 0 (p = 1/C) it is exact for the refit, whose Z^T Z is diagonal, and close for a fold. Away from 0 rows
    saturate and the diagonal at the warm start ("Jacobi") describes the curvature better where classes separate,
    worse where few rows carry it. The geometric mean of the two was the robust choice, measured along the
    default path: every fit of planted N < D features and of digits padded with noise certified at 1e-4 to
    lambda = 1e-4 in 5-40 iterations, where either alone left fits at 1e-2 on one of them. The intercept row
    gets C.
    """
    classes = logits.shape[0]
    squares = (z * z).T @ (weights / weights.sum())  # [r]
    probs = jax.nn.softmax(logits, axis=0)
    spread = probs * (1 - probs) * (weights / weights.sum())  # [C, N]
    at_zero = squares * (1 - 1 / classes) / classes + lam
    at_start = (z * z).T @ spread.T + lam  # [r, C]
    intercept = jnp.sqrt((1 - 1 / classes) / classes * jnp.maximum(spread.sum(1), TINY))  # [C]
    return 1.0 / jnp.concatenate([jnp.sqrt(at_zero[:, None] * at_start), intercept[None]])


class PathResult(NamedTuple):
    """Per problem and lambda: params [P, L, r + 1, C], logits on the rows of Z [P, L, C, N] and on the eval rows
    [P, L, M, C], objective, estimated gap (value - optimum) and iterations."""

    params: jax.Array
    train_logits: jax.Array
    eval_logits: jax.Array
    objective: jax.Array
    gap: jax.Array
    iterations: jax.Array


def _carry_pairs(pairs: lbfgs.Pairs, shape: tuple[int, ...], lam_change: jax.Array) -> lbfgs.Pairs:
    """Curvature pairs of the previous lambda made exact for the next: the penalty's Hessian moved by
    lam_change * I on the weight rows (the intercept row is unpenalised)."""
    penalised = jnp.ones(shape, pairs.s.dtype).at[-1].set(0.0).ravel()
    return pairs._replace(y=pairs.y + lam_change * pairs.s * penalised)


RESCALE_STEPS = 4


def _rescaled(problem: SoftmaxRegression, params: jax.Array, logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The warm start gamma W (b kept) with gamma minimising the new lambda's objective along that ray, and its
    logits.

    As lambda falls, the solution mostly grows along the previous one (separable classes: its norm grows like
    log 1/lambda); finding that growth costs a few elementwise Newton steps on the carried logits and no product
    with Z. Measured: half the iterations at intermediate lambdas.
    """
    intercept = params[-1][:, None]
    centred = logits - intercept
    norm = jnp.sum(params[:-1] ** 2)

    def newton(_, gamma):
        probs = jax.nn.softmax(gamma * centred + intercept, axis=0)
        slope = jnp.sum(((probs - problem.onehot) * centred) @ problem.weights) + problem.lam * gamma * norm
        mean = jnp.sum(probs * centred, axis=0)
        curvature = (jnp.sum(probs * centred**2, axis=0) - mean**2) @ problem.weights + problem.lam * norm
        return jnp.clip(gamma - slope / jnp.maximum(curvature, TINY), 0.5, 4.0)

    gamma = jax.lax.fori_loop(0, RESCALE_STEPS, newton, jnp.ones((), logits.dtype))
    gamma = jnp.where(norm > 0, gamma, 1.0)
    return params.at[:-1].multiply(gamma), gamma * centred + intercept


def _path_one(z, z_eval, labels, weights, lambdas, num_classes: int, max_iter: int, tol: float):
    """One problem along the whole lambda path (vmapped over problems by the caller)."""
    shape = (z.shape[1] + 1, num_classes)
    carry = (jnp.zeros(shape, z.dtype), lbfgs.empty_pairs(shape[0] * shape[1], z.dtype), lambdas[0])

    def step(carry, lam):
        params, pairs, previous = carry
        problem = SoftmaxRegression.of(z, labels, weights, lam, num_classes)
        params, logits = _rescaled(problem, params, problem.aux_of(params))
        scaling = preconditioner(z, weights, lam, logits)
        state = lbfgs.start(problem, params, scaling, _carry_pairs(pairs, shape, lam - previous), logits)
        state = lbfgs.minimize(problem, state, max_iter, tol * ESTIMATE_MARGIN, scaling, shape)
        params = state.params.reshape(shape)
        evaluated = z_eval @ params[:-1] + params[-1]
        outputs = (params, state.aux, evaluated, state.value, state.gap, state.count)
        return (params, lbfgs.pairs_of(state.history), lam), outputs

    return PathResult(*jax.lax.scan(step, carry, lambdas)[1])


def logistic_path(z: jax.Array, z_eval: jax.Array, labels: jax.Array, weights: jax.Array, lambdas: jax.Array,
                  num_classes: int, max_iter: int, tol: float = DEFAULT_TOL) -> PathResult:
    """Fit P problems (labels [P, N], row weights [P, N]) on shared coordinates z [N, r] for every lambda of
    ``lambdas`` [L] (decreasing), each warm-started from the one before."""
    one = functools.partial(_path_one, num_classes=num_classes, max_iter=max_iter, tol=tol)
    return jax.vmap(one, in_axes=(None, None, 0, 0, None))(z, z_eval, labels, weights, lambdas)


INTERCEPT_NEWTON_STEPS = 8


def _optimal_intercept_shift(problem: SoftmaxRegression, logits: jax.Array) -> jax.Array:
    """kappa [C] with sum_i w_i softmax(logits_i + kappa) = the class prior: the intercept's optimum for the
    current W, by damped Newton steps (float64: the dual point needs the constraint met to ~1e-15)."""
    prior = problem.onehot @ problem.weights
    classes = logits.shape[0]

    def newton(_, shift):
        probs = jax.nn.softmax(logits + shift[:, None], axis=0)
        weighted = probs * problem.weights
        grad = weighted.sum(1) - prior
        hessian = jnp.diag(weighted.sum(1)) - weighted @ probs.T + 1.0 / classes  # + 11^T/C: the null direction
        return shift - jnp.clip(jnp.linalg.solve(hessian, grad), -5.0, 5.0)

    return jax.lax.fori_loop(0, INTERCEPT_NEWTON_STEPS, newton, jnp.zeros(classes, logits.dtype))


def _duality_gap(problem: SoftmaxRegression, params, loss, loss_grad, intercept_grad) -> jax.Array:
    """P - D(q) for the dual point q_i = (1 - t) p_i + t s (module docstring): t is the least mixing that meets
    the intercept's constraint, ~0 after ``_optimal_intercept_shift``."""
    weight_rows, intercept = params[:-1], params[-1]
    prior = problem.onehot @ problem.weights
    mean_p = prior + intercept_grad
    ratio = jnp.max(intercept_grad / jnp.maximum(mean_p, TINY))
    t = jnp.clip(ratio, 0.0, 1.0)
    s = jnp.clip(jnp.where(ratio <= 1.0, mean_p - intercept_grad / jnp.maximum(ratio, TINY), prior), 0.0, 1.0)
    crossed = jnp.sum(weight_rows * loss_grad) + intercept @ intercept_grad  # sum_i w_i (CE_i - H(p_i))
    z_weights, z_labels = problem.z.T @ problem.weights, problem.z.T @ (problem.onehot * problem.weights).T
    dual_grad = (1 - t) * loss_grad + t * (jnp.outer(z_weights, s) - z_labels)  # Z^T A
    penalty = 0.5 * problem.lam * jnp.sum(weight_rows**2)
    gap = (1 - t) * crossed + t * (loss - _entropy(s)) + penalty + jnp.sum(dual_grad**2) / (2 * problem.lam)
    return jnp.maximum(gap, 0.0)


def _certify_one(z, params, labels, weights, lam, num_classes: int):
    z, params = z.astype(jnp.float64), params.astype(jnp.float64)
    problem = SoftmaxRegression.of(z, labels, weights.astype(jnp.float64), lam, num_classes)
    logits = problem.aux_of(params)
    shift = _optimal_intercept_shift(problem, logits)
    params = params.at[-1].add(shift)
    value, loss, loss_grad, intercept_grad, _ = problem.parts(params, logits + shift[:, None])
    return shift, value, _duality_gap(problem, params, loss, loss_grad, intercept_grad)


def certify(z: jax.Array, params: jax.Array, labels: jax.Array, weights: jax.Array, lambdas: jax.Array,
            num_classes: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """For params [P, L, r + 1, C] of ``logistic_path``: the optimal intercept shift [P, L, C], and, at the
    shifted params, the objective [P, L] and a certified upper bound on objective - optimum [P, L] (a duality
    gap in float64; call under ``jax.enable_x64(True)``)."""
    one = functools.partial(_certify_one, num_classes=num_classes)
    per_lambda = jax.vmap(one, in_axes=(None, 0, None, None, 0))
    return jax.vmap(per_lambda, in_axes=(None, 0, 0, 0, None))(z, params, labels, weights, lambdas)
