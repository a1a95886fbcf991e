"""A vmap-friendly, preconditioned L-BFGS for thousands of small, smooth, strongly convex problems side by side.

Why not ``optax.lbfgs``: its zoom line search is nested data-dependent control flow; under ``vmap`` every
``cond`` runs both branches and every inner ``while_loop`` runs as long as the slowest problem, which measured
several times slower than this on probe workloads. Here one iteration has a fixed shape: the two-loop recursion
over a fixed-size history, then the objective at ``LINE_SEARCH_STEPS`` step sizes (1, 1/2, 1/4, ...) at once,
keeping the largest that satisfies Armijo's condition. Converged problems are frozen.

The initial inverse Hessian is ``gamma * preconditioner`` (a diagonal the problem supplies, e.g. the inverse
curvature of a linear model in its eigenbasis), so well-preconditioned problems take a unit step from the start.

Stopping: the quasi-Newton model predicts that a full step lowers the objective by ``-g.d / 2``; a problem stops
when that predicted decrease is below ``tol`` x max(|f|, ``PROGRESS_SCALE_FLOOR``), a scale-free criterion that
bounds the relative objective gap (what agreement with scikit-learn's optimum is measured in), when an iteration
makes less than ``RELATIVE_PROGRESS`` relative progress, or after ``max_iter`` iterations.

The problem supplies a ``LineProblem``: besides value and gradient it can carry ``aux`` (for a linear model, the
logits Z W) so that trying several step sizes along a direction costs one product Z d, not one per step.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

HISTORY = 5  # measured: the same iterations as 10 on probe workloads, 13% less time per iteration
LINE_SEARCH_STEPS = 12
ARMIJO = 1e-4
CURVATURE_FLOOR = 1e-10
# In the interpolation regime (lambda so small that the training rows are separable) the objective is tiny and
# its decrease stalls before the optimum: with the eigenbasis preconditioner, measured within 5% of a tight solve
# at lambda = 1e-5 (accuracy unaffected), and within 1e-3 relative for lambda >= 1e-3.
RELATIVE_PROGRESS = 1e-7
PROGRESS_SCALE_FLOOR = 1e-2


class LineProblem(Protocol):
    def value_and_grad(self, params: jax.Array, aux: Any) -> tuple[jax.Array, jax.Array]: ...

    def aux_of(self, params: jax.Array) -> Any: ...

    def along(self, params: jax.Array, aux: Any, direction: jax.Array, steps: jax.Array) -> tuple[jax.Array, Any]:
        """Objective values [J] at params + steps[j] * direction, and what is needed to move there."""
        ...

    def moved(self, aux: Any, along_aux: Any, step: jax.Array) -> Any: ...


class State(NamedTuple):
    params: jax.Array
    aux: Any
    value: jax.Array
    grad: jax.Array
    direction: jax.Array  # the quasi-Newton direction -H g at params
    s_history: jax.Array  # [HISTORY, *params.shape], oldest first
    y_history: jax.Array
    rho: jax.Array  # [HISTORY], 0 where the slot is empty
    count: jax.Array
    progress: jax.Array  # relative decrease of the last iteration


def _vdot(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.sum(a * b)


def _direction(grad: jax.Array, s_history: jax.Array, y_history: jax.Array, rho: jax.Array,
               preconditioner: jax.Array, first_scale: jax.Array) -> jax.Array:
    """-H g by the two-loop recursion with H0 = gamma P; empty history slots (rho = 0) are no-ops."""
    def backward(k, carry):
        i = HISTORY - 1 - k
        q, alphas = carry
        alpha = rho[i] * _vdot(s_history[i], q)
        return q - alpha * y_history[i], alphas.at[i].set(alpha)

    q, alphas = jax.lax.fori_loop(0, HISTORY, backward, (grad, jnp.zeros(HISTORY, grad.dtype)))
    newest_y = y_history[-1]
    y_p_y = _vdot(newest_y, preconditioner * newest_y)
    gamma = jnp.where(rho[-1] > 0, 1.0 / jnp.maximum(rho[-1] * y_p_y, CURVATURE_FLOOR), first_scale)

    def forward(i, r):
        beta = rho[i] * _vdot(y_history[i], r)
        return r + s_history[i] * (alphas[i] - beta)

    return -jax.lax.fori_loop(0, HISTORY, forward, gamma * preconditioner * q)


def _push(history: jax.Array, item: jax.Array, keep: jax.Array) -> jax.Array:
    return jnp.where(keep, jnp.concatenate([history[1:], item[None]]), history)


def _line_search(problem: LineProblem, state: State) -> tuple[jax.Array, jax.Array, Any, jax.Array]:
    """Step size (0 if nothing lowers the objective), the direction taken, the aux to move by, and whether an
    Armijo step was found."""
    direction, slope = state.direction, _vdot(state.grad, state.direction)
    descent = slope < 0
    direction = jnp.where(descent, direction, -state.grad)  # fall back to steepest descent
    slope = jnp.where(descent, slope, -_vdot(state.grad, state.grad))
    steps = 0.5 ** jnp.arange(LINE_SEARCH_STEPS, dtype=state.params.dtype)
    values, along_aux = problem.along(state.params, state.aux, direction, steps)
    accepted = values <= state.value + ARMIJO * steps * slope
    # No Armijo step (the quasi-Newton scale is off, e.g. near-separable classes): take the best decrease found
    # (the history restarts), rather than stopping early at a point that is not the optimum.
    best = jnp.argmin(values)
    fallback = jnp.where(values[best] < state.value, steps[best], 0.0)
    step = jnp.where(accepted.any(), steps[jnp.argmax(accepted)], fallback)
    return step, direction, along_aux, accepted.any()


def _step(problem: LineProblem, preconditioner: jax.Array, state: State) -> State:
    step, direction, along_aux, accepted = _line_search(problem, state)
    params = state.params + step * direction
    aux = problem.moved(state.aux, along_aux, step)
    value, grad = problem.value_and_grad(params, aux)
    s, y = params - state.params, grad - state.grad
    curvature = _vdot(s, y)
    keep = curvature > CURVATURE_FLOOR
    rho = jnp.where(accepted, state.rho, 0.0)
    rho = jnp.where(keep, jnp.concatenate([rho[1:], (1.0 / jnp.where(keep, curvature, 1.0))[None]]), rho)
    s_history, y_history = _push(state.s_history, s, keep), _push(state.y_history, y, keep)
    direction = _direction(grad, s_history, y_history, rho, preconditioner, jnp.ones((), grad.dtype))
    progress = (state.value - value) / jnp.maximum(jnp.abs(state.value), PROGRESS_SCALE_FLOOR)
    return State(params, aux, value, grad, direction, s_history, y_history, rho, state.count + 1, progress)


def minimize(problem: LineProblem, params: jax.Array, max_iter: int, tol: float,
             preconditioner: jax.Array | None = None) -> State:
    """Minimise from ``params`` until the predicted decrease is below ``tol`` relative, progress stalls, or
    ``max_iter`` iterations. ``preconditioner``: a positive diagonal approximating the inverse Hessian
    (broadcastable to ``params``); without one the first step is scaled to unit length."""
    aux = problem.aux_of(params)
    value, grad = problem.value_and_grad(params, aux)
    history = jnp.zeros((HISTORY, *params.shape), params.dtype)
    rho = jnp.zeros(HISTORY, params.dtype)
    if preconditioner is None:
        preconditioner = jnp.ones((), params.dtype)
        first_scale = 1.0 / jnp.maximum(jnp.sqrt(_vdot(grad, grad)), 1.0)
    else:
        first_scale = jnp.ones((), params.dtype)
    direction = _direction(grad, history, history, rho, preconditioner, first_scale)
    state = State(params, aux, value, grad, direction, history, history, rho, jnp.zeros((), jnp.int32),
                  jnp.ones((), params.dtype))

    def running(s: State) -> jax.Array:
        scale = jnp.maximum(jnp.abs(s.value), PROGRESS_SCALE_FLOOR)
        predicted = -0.5 * _vdot(s.grad, s.direction)
        moving = (s.count == 0) | (s.progress > RELATIVE_PROGRESS)
        return (s.count < max_iter) & (predicted > tol * scale) & moving

    def body(s: State) -> State:
        stepped = _step(problem, preconditioner, s)
        return jax.tree.map(lambda new, old: jnp.where(running(s), new, old), stepped, s)

    return jax.lax.while_loop(running, body, state)
