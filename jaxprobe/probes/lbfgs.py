"""A vmap-friendly L-BFGS for thousands of small, smooth, strongly convex problems solved side by side.

Why not ``optax.lbfgs``: its zoom line search is nested data-dependent control flow; under ``vmap`` every
``cond`` runs both branches and every inner ``while_loop`` runs as long as the slowest problem, which measured
several times slower than this on probe workloads. Here one iteration has a fixed shape: the two-loop recursion
over a fixed-size history, then the objective at ``LINE_SEARCH_STEPS`` step sizes (1, 1/2, 1/4, ...) at once,
keeping the largest that satisfies Armijo's condition. Converged problems are frozen.

The problem supplies a ``LineProblem``: besides value and gradient it can carry ``aux`` (for a linear model, the
logits Z W) so that trying several step sizes along a direction costs one product Z d, not one per step.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

HISTORY = 10
LINE_SEARCH_STEPS = 12
ARMIJO = 1e-4
CURVATURE_FLOOR = 1e-10
# Stop when an iteration lowers the objective by less than RELATIVE_PROGRESS x max(|f|, PROGRESS_SCALE_FLOOR).
# In the interpolation regime (lambda so small that the training rows are separable) the objective is tiny and
# fits stop before its optimum; accuracy there is unaffected, the objective can be off by up to ~2x.
RELATIVE_PROGRESS = 1e-6
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
    s_history: jax.Array  # [HISTORY, *params.shape], oldest first
    y_history: jax.Array
    rho: jax.Array  # [HISTORY], 0 where the slot is empty
    count: jax.Array
    progress: jax.Array  # relative decrease of the last iteration


def _vdot(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.sum(a * b)


def _direction(state: State) -> jax.Array:
    """-H g by the two-loop recursion; empty history slots (rho = 0) are no-ops."""
    def backward(k, carry):
        i = HISTORY - 1 - k
        q, alphas = carry
        alpha = state.rho[i] * _vdot(state.s_history[i], q)
        return q - alpha * state.y_history[i], alphas.at[i].set(alpha)

    q, alphas = jax.lax.fori_loop(0, HISTORY, backward, (state.grad, jnp.zeros(HISTORY, state.grad.dtype)))
    yy = _vdot(state.y_history[-1], state.y_history[-1])
    first_scale = 1.0 / jnp.maximum(jnp.sqrt(_vdot(state.grad, state.grad)), 1.0)
    gamma = jnp.where(state.rho[-1] > 0, 1.0 / jnp.maximum(state.rho[-1] * yy, CURVATURE_FLOOR), first_scale)

    def forward(i, r):
        beta = state.rho[i] * _vdot(state.y_history[i], r)
        return r + state.s_history[i] * (alphas[i] - beta)

    return -jax.lax.fori_loop(0, HISTORY, forward, gamma * q)


def _push(history: jax.Array, item: jax.Array, keep: jax.Array) -> jax.Array:
    return jnp.where(keep, jnp.concatenate([history[1:], item[None]]), history)


def _step(problem: LineProblem, state: State) -> State:
    direction = _direction(state)
    slope = _vdot(state.grad, direction)
    descent = slope < 0
    direction = jnp.where(descent, direction, -state.grad)  # fall back to steepest descent
    slope = jnp.where(descent, slope, -_vdot(state.grad, state.grad))
    steps = 0.5 ** jnp.arange(LINE_SEARCH_STEPS, dtype=state.params.dtype)
    values, along_aux = problem.along(state.params, state.aux, direction, steps)
    accepted = values <= state.value + ARMIJO * steps * slope
    # No Armijo step (the quasi-Newton scale is off, e.g. near-separable classes): take the best decrease found
    # and restart the history, rather than stopping early at a point that is not the optimum.
    best = jnp.argmin(values)
    fallback = jnp.where(values[best] < state.value, steps[best], 0.0)
    step = jnp.where(accepted.any(), steps[jnp.argmax(accepted)], fallback)
    params = state.params + step * direction
    aux = problem.moved(state.aux, along_aux, step)
    value, grad = problem.value_and_grad(params, aux)
    s, y = params - state.params, grad - state.grad
    curvature = _vdot(s, y)
    keep = curvature > CURVATURE_FLOOR
    restart = ~accepted.any()
    state = state._replace(rho=jnp.where(restart, 0.0, state.rho))
    rho = jnp.where(keep, jnp.concatenate([state.rho[1:], (1.0 / jnp.where(keep, curvature, 1.0))[None]]),
                    state.rho)
    progress = (state.value - value) / jnp.maximum(jnp.abs(state.value), PROGRESS_SCALE_FLOOR)
    return State(params, aux, value, grad, _push(state.s_history, s, keep), _push(state.y_history, y, keep), rho,
                 state.count + 1, progress)


def minimize(problem: LineProblem, params: jax.Array, max_iter: int, tol: float) -> State:
    """Minimise from ``params`` until max |grad_i| < tol (scipy's and scikit-learn's ``gtol``), progress
    stalls, or ``max_iter`` iterations."""
    aux = problem.aux_of(params)
    value, grad = problem.value_and_grad(params, aux)
    history = jnp.zeros((HISTORY, *params.shape), params.dtype)
    state = State(params, aux, value, grad, history, history, jnp.zeros(HISTORY, params.dtype),
                  jnp.zeros((), jnp.int32), jnp.ones((), params.dtype))

    def running(s: State) -> jax.Array:
        moving = (s.count == 0) | (s.progress > RELATIVE_PROGRESS)
        return (s.count < max_iter) & (jnp.max(jnp.abs(s.grad)) >= tol) & moving

    def body(s: State) -> State:
        stepped = _step(problem, s)
        return jax.tree.map(lambda new, old: jnp.where(running(s), new, old), stepped, s)

    return jax.lax.while_loop(running, body, state)
