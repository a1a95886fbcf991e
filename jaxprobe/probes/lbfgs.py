"""A vmap-friendly, preconditioned L-BFGS for thousands of small, smooth, strongly convex problems side by side,
stopped by an estimate of the distance to the optimum.

Why not ``optax.lbfgs``: its zoom line search is nested data-dependent control flow; under ``vmap`` every
``cond`` runs both branches and every inner ``while_loop`` runs as long as the slowest problem, which measured
several times slower than this on probe workloads. Here one iteration has a fixed shape: the quasi-Newton
direction, then the objective at ``LINE_SEARCH_STEPS`` step sizes (1, 1/2, 1/4, 1/8) at once, keeping the
largest that satisfies Armijo's condition (with a good preconditioner the unit step is accepted almost always,
so a short ladder costs a third of the elementwise work of a long one). Problems that have stopped take zero
steps: nothing of theirs changes.

The direction uses the compact representation of the L-BFGS inverse Hessian (Byrd, Nocedal & Schnabel 1994)
with H0 = gamma * P, P a diagonal the problem supplies (e.g. the inverse curvature of a linear model in its
eigenbasis). The m curvature pairs live in a ring buffer with their Grams s_i.y_j and y_i.P.y_j; every dot
product a new pair needs follows from the m-vectors S g and Y P g that the next direction needs anyway (and
from the coefficients of the last direction), so an iteration reads the history four times, writes two rows, and
solves two [m, m] triangular systems. Measured: the two-loop recursion's 4m dependent vector operations cost more
than the problem's own products at m = 20 (13.4 ms vs 5.3 ms per iteration at m = 5, 56 problems).

Stopping: the problem reports, with its value and gradient, ``gap``: an estimate of ``value - optimum`` (for
the probes, a duality gap; ``jaxprobe.probes.logistic.certify`` turns the end point's into a guarantee). A
problem stops when ``gap <= tol * |value|``, when it can make no more progress (no step lowers the objective
even after the history is dropped), when the gap's decay rate says tol is out of reach within ``max_iter``
(``CHECKPOINT``), or after ``max_iter`` iterations.

The problem supplies a ``LineProblem``: besides value and gradient it can carry ``aux`` (for a linear model, the
logits Z W) so that trying several step sizes along a direction costs one product Z d, not one per step.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

# Small lambdas, where the preconditioner is far from the curvature of saturated rows, lean on the history:
# measured on planted N < D probes along the default path (8 sites x 7 problems), 5 pairs took 224 iterations per
# path on average, 10 or 20 about a quarter of that; 10 read half the history per iteration and were faster.
HISTORY = 10
LINE_SEARCH_STEPS = 4
ARMIJO = 1e-4
CURVATURE_FLOOR = 1e-10
# Give-up rule: every CHECKPOINT iterations, the gap estimate's decay since the last checkpoint is extrapolated;
# a fit that would not reach tol within max_iter at that rate (or whose gap did not fall: float32 resolution of
# its objective) stops now instead of running out the cap (separable classes at tiny lambda crawl like that).
CHECKPOINT = 20


class LineProblem(Protocol):
    def evaluate(self, params: jax.Array, aux: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(value, gradient, estimate of value - optimum) at ``params`` whose aux is ``aux``."""
        ...

    def aux_of(self, params: jax.Array) -> Any: ...

    def along(self, params: jax.Array, aux: Any, direction: jax.Array, steps: jax.Array) -> tuple[jax.Array, Any]:
        """Objective values [J] at params + steps[j] * direction, and what is needed to move there."""
        ...

    def moved(self, aux: Any, along_aux: Any, step: jax.Array) -> Any: ...


class History(NamedTuple):
    """Ring buffer of curvature pairs (flattened rows s, y [m, n]), their Grams sy[i, j] = s_i.y_j and
    ypy[i, j] = y_i.P.y_j, which slots hold a pair, the slot written last, and S g, Y P g at the current g."""

    s: jax.Array
    y: jax.Array
    sy: jax.Array
    ypy: jax.Array
    filled: jax.Array
    newest: jax.Array
    s_grad: jax.Array
    y_grad: jax.Array


class State(NamedTuple):
    params: jax.Array  # flat
    aux: Any
    value: jax.Array
    grad: jax.Array
    gap: jax.Array  # estimate of value - optimum
    direction: jax.Array  # the quasi-Newton direction -H g at params ...
    coefficients: tuple[jax.Array, jax.Array, jax.Array]  # ... as (gamma, p, u): -(gamma P g + p S - gamma P u Y)
    history: History
    count: jax.Array
    stalled: jax.Array  # no step lowered the objective (even along -P g), or tol is out of reach (CHECKPOINT)
    best_gap: jax.Array  # the smallest gap estimate so far (it is not monotone) ...
    mark_gap: jax.Array  # ... and its value at the last checkpoint


class Pairs(NamedTuple):
    """Curvature pairs to start from: ring buffer rows s, y [HISTORY, n] (zero rows empty) and the slot written
    last."""

    s: jax.Array
    y: jax.Array
    newest: jax.Array


def empty_pairs(size: int, dtype) -> Pairs:
    zeros = jnp.zeros((HISTORY, size), dtype)
    return Pairs(zeros, zeros, jnp.asarray(HISTORY - 1, jnp.int32))


def pairs_of(history: History) -> Pairs:
    keep = history.filled[:, None]
    return Pairs(history.s * keep, history.y * keep, history.newest)


def _history_of(pairs: Pairs, grad: jax.Array, preconditioner: jax.Array) -> History:
    """Grams from scratch (a new preconditioner, corrected pairs); pairs without positive curvature are empty."""
    s, y = pairs.s, pairs.y
    filled = jnp.sum(s * y, axis=1) > CURVATURE_FLOOR
    s, y = s * filled[:, None], y * filled[:, None]
    return History(s, y, s @ y.T, (y * preconditioner) @ y.T, filled, pairs.newest, s @ grad,
                   y @ (preconditioner * grad))


def _chronological(history: History) -> jax.Array:
    """Slot indices from oldest to newest."""
    return (history.newest + 1 + jnp.arange(HISTORY)) % HISTORY


def _direction(grad: jax.Array, history: History, preconditioner: jax.Array):
    """-H g with H = H0 + [S H0Y] [[R^-T (D + Y H0 Y^T) R^-1, -R^-T], [-R^-1, 0]] [S; Y H0], and its
    coefficients (gamma, p, u) over the slots."""
    order = _chronological(history)
    filled = history.filled[order]
    mask = jnp.outer(filled, filled)
    sy = (history.sy[order][:, order]) * mask
    ypy = (history.ypy[order][:, order]) * mask
    newest_sy, newest_ypy = history.sy[history.newest, history.newest], history.ypy[history.newest, history.newest]
    gamma = jnp.where(history.filled[history.newest], newest_sy / jnp.maximum(newest_ypy, CURVATURE_FLOOR), 1.0)
    upper = jnp.triu(sy) + jnp.diag(jnp.where(filled, 0.0, 1.0))  # empty slots decouple with R_ii = 1
    u = jax.scipy.linalg.solve_triangular(upper, history.s_grad[order] * filled, lower=False)
    rhs = jnp.diagonal(sy) * u + gamma * (ypy @ u) - gamma * history.y_grad[order] * filled
    p = jax.scipy.linalg.solve_triangular(upper, rhs, trans=1, lower=False)
    p, u = jnp.zeros_like(p).at[order].set(p), jnp.zeros_like(u).at[order].set(u)  # back to slot order
    direction = -(gamma * preconditioner * grad + p @ history.s - gamma * preconditioner * (u @ history.y))
    return direction, (gamma, p, u)


def _pushed(history: History, grad: jax.Array, s_new: jax.Array, y_new: jax.Array, y_dot_direction: jax.Array,
            step: jax.Array, preconditioner: jax.Array, keep: jax.Array) -> History:
    """The history at the new gradient, with (s_new, y_new) written over the oldest slot when ``keep``."""
    s_grad, y_grad = history.s @ grad, history.y @ (preconditioner * grad)  # needed by the next direction
    slot = (history.newest + 1) % HISTORY
    s_dot_y_new = s_grad - history.s_grad  # s_i.y_new, from S g_new - S g_old
    y_dot_py_new = y_grad - history.y_grad  # y_i.P.y_new
    y_dot_s_new = step * y_dot_direction  # y_i.s_new
    py_new = preconditioner * y_new
    own_sy, own_ypy = s_new @ y_new, y_new @ py_new
    sy = history.sy.at[slot, :].set(y_dot_s_new).at[:, slot].set(s_dot_y_new).at[slot, slot].set(own_sy)
    ypy = history.ypy.at[slot, :].set(y_dot_py_new).at[:, slot].set(y_dot_py_new).at[slot, slot].set(own_ypy)
    written = History(history.s.at[slot].set(s_new), history.y.at[slot].set(y_new), sy, ypy,
                      history.filled.at[slot].set(True), slot,
                      s_grad.at[slot].set(s_new @ grad), y_grad.at[slot].set(y_new @ (preconditioner * grad)))
    kept = history._replace(s_grad=s_grad, y_grad=y_grad)
    return jax.tree.map(lambda new, old: jnp.where(keep, new, old), written, kept)


def _line_search(problem: LineProblem, state: State, preconditioner: jax.Array,
                 shape) -> tuple[jax.Array, jax.Array, Any, jax.Array]:
    """Step size (0 if nothing lowers the objective), the direction taken, the aux to move by, and whether an
    Armijo step was found (False: the direction was -P g or failed, and the history restarts)."""
    direction, slope = state.direction, jnp.sum(state.grad * state.direction)
    descent = slope < 0
    direction = jnp.where(descent, direction, -preconditioner * state.grad)  # fall back to -P g
    slope = jnp.where(descent, slope, -jnp.sum(preconditioner * state.grad**2))
    steps = 0.5 ** jnp.arange(LINE_SEARCH_STEPS, dtype=state.params.dtype)
    values, along_aux = problem.along(state.params.reshape(shape), state.aux, direction.reshape(shape), steps)
    accepted = values <= state.value + ARMIJO * steps * slope
    # No Armijo step (the quasi-Newton scale is off, e.g. near-separable classes): take the best decrease found
    # (the history restarts), rather than stopping early at a point that is not the optimum.
    best = jnp.argmin(values)
    fallback = jnp.where(values[best] < state.value, steps[best], 0.0)
    step = jnp.where(accepted.any(), steps[jnp.argmax(accepted)], fallback)
    return step, direction, along_aux, accepted.any() & descent


def _y_dot_direction(history: History, coefficients) -> jax.Array:
    """y_i.d for the direction d = -(gamma P g + p S - gamma P u Y), from small quantities only."""
    gamma, p, u = coefficients
    return -(gamma * history.y_grad + history.sy.T @ p - gamma * history.ypy @ u)


def _step(problem: LineProblem, preconditioner: jax.Array, shape, state: State, active: jax.Array) -> State:
    """One iteration; an inactive problem takes a zero step and keeps everything."""
    step, direction, along_aux, accepted = _line_search(problem, state, preconditioner, shape)
    step = jnp.where(active, step, 0.0)
    used_quasi_newton = jnp.sum(state.grad * state.direction) < 0
    y_dot_direction = jnp.where(used_quasi_newton, _y_dot_direction(state.history, state.coefficients),
                                -state.history.y_grad)
    params = state.params + step * direction
    aux = problem.moved(state.aux, along_aux, step)
    value, grad, gap = problem.evaluate(params.reshape(shape), aux)
    grad = grad.ravel()
    s_new, y_new = params - state.params, grad - state.grad
    history = state.history
    restart = active & ~accepted
    history = history._replace(filled=jnp.where(restart, False, history.filled))
    keep = active & (jnp.sum(s_new * y_new) > CURVATURE_FLOOR)
    history = _pushed(history, grad, s_new, y_new, y_dot_direction, step, preconditioner, keep)
    direction, coefficients = _direction(grad, history, preconditioner)
    stalled = active & (step == 0) & ~state.history.filled.any()  # even the history-free direction failed
    count = state.count + active.astype(state.count.dtype)
    return State(params, aux, value, grad, gap, direction, coefficients, history, count, state.stalled | stalled,
                 jnp.minimum(state.best_gap, gap), state.mark_gap)


def _checkpoint(state: State, active: jax.Array, tol: float, max_iter: int) -> State:
    """Every CHECKPOINT iterations: give up if the decay rate of the smallest gap since the last checkpoint cannot
    reach tol within the iterations left."""
    due = active & (state.count % CHECKPOINT == 0)
    target = tol * jnp.abs(state.value)
    ratio = state.best_gap / jnp.maximum(state.mark_gap, 1e-38)
    needed = CHECKPOINT * jnp.log(target / state.best_gap) / jnp.log(jnp.minimum(ratio, 1 - 1e-6))
    hopeless = due & ((ratio >= 1) | (needed > max_iter - state.count))
    return state._replace(stalled=state.stalled | hopeless,
                          mark_gap=jnp.where(due, state.best_gap, state.mark_gap))


def start(problem: LineProblem, params: jax.Array, preconditioner: jax.Array, pairs: Pairs | None = None,
          aux: Any = None) -> State:
    """The state at ``params`` (whose aux may be given); ``pairs`` carries curvature pairs over from a related
    problem. ``preconditioner`` broadcasts to ``params``."""
    aux = problem.aux_of(params) if aux is None else aux
    value, grad, gap = problem.evaluate(params, aux)
    grad = grad.ravel()
    flat_preconditioner = jnp.broadcast_to(preconditioner, params.shape).ravel()
    pairs = empty_pairs(params.size, params.dtype) if pairs is None else pairs
    history = _history_of(pairs, grad, flat_preconditioner)
    direction, coefficients = _direction(grad, history, flat_preconditioner)
    zero = jnp.zeros((), jnp.int32)
    return State(params.ravel(), aux, value, grad, gap, direction, coefficients, history, zero,
                 jnp.zeros((), bool), gap, gap)


def converged(state: State, tol: float) -> jax.Array:
    return state.gap <= tol * jnp.abs(state.value)


def minimize(problem: LineProblem, state: State, max_iter: int, tol: float, preconditioner: jax.Array,
             shape: tuple[int, ...]) -> State:
    """Iterate from ``state`` until the gap is below ``tol`` relative, no step helps, tol is out of reach, or
    ``max_iter`` iterations (counted from zero in ``state.count``). ``preconditioner``: a positive diagonal
    approximating the inverse Hessian (broadcastable to the params, whose ``shape`` the state keeps flat)."""
    flat_preconditioner = jnp.broadcast_to(preconditioner, shape).ravel()

    def running(s: State) -> jax.Array:
        return (s.count < max_iter) & ~converged(s, tol) & ~s.stalled

    def body(s: State) -> State:
        active = running(s)
        return _checkpoint(_step(problem, flat_preconditioner, shape, s, active), active, tol, max_iter)

    return jax.lax.while_loop(running, body, state)
