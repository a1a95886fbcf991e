"""Fit every linear probe of a stack of sites for every fold, the refit and the control task; scores out.

``probe.fold_scaling = "train"``: one ``Span`` per site (standardised with all training rows) serves the folds,
the refit and the control (``jaxprobe.probes.span`` says why that is exact). ``"fold"``: every fold is
standardised and decomposed on its own rows, as a scikit-learn pipeline inside cross-validation does (F more
decompositions per site); the refit and control use the training span either way.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh

from jaxprobe.parallel import pad_to_multiple
from jaxprobe.probes import programs
from jaxprobe.probes.logistic import DEFAULT_TOL
from jaxprobe.probes.programs import Problems

LINEAR_KINDS = ("ridge", "logistic")


def default_block() -> int:
    """Sites per call of the compiled programs, an execution setting (results do not depend on it). Each call's
    logistic loop runs until its slowest problem converges, so on a CPU small blocks waste less on stragglers
    (measured, 8 BUSI-shaped sites: blocks of 2 took 0.6x the time of one block of 8); an accelerator wants
    large blocks to fill it."""
    return 2 if jax.default_backend() == "cpu" else 32


@dataclasses.dataclass(frozen=True)
class FitSpec:
    """What ``fit_linear`` fits: lambdas per kind (decreasing), and the solver's limits."""

    lambdas: dict[str, np.ndarray]
    num_classes: int
    max_iter: int = 100
    tol: float = DEFAULT_TOL
    fold_scaling: str = "train"
    block: int = dataclasses.field(default_factory=lambda: default_block())  # sites per program call

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(kind for kind in LINEAR_KINDS if kind in self.lambdas)

    def grid(self, kind: str) -> np.ndarray:
        return np.asarray(self.lambdas.get(kind, [1.0]), np.float32)


@dataclasses.dataclass
class KindScores:
    """One kind's scores for S sites: validation [S, L, n_f, C] per fold, refit on test rows [S, L, M, C] and on
    training rows [S, L, N, C], the control fit on training rows [S, L, N, C] (or None), and per fit
    diagnostics [S, L] (``objective``, relative ``gap``, ``converged``, ``iterations``) for folds and refit."""

    validation: list[np.ndarray]
    test: np.ndarray
    train: np.ndarray
    control_train: np.ndarray | None
    fold_diagnostics: list[dict[str, np.ndarray]]
    refit_diagnostics: dict[str, np.ndarray]


def _padded(indices: list[np.ndarray]) -> np.ndarray:
    width = max(len(rows) for rows in indices)
    return np.stack([np.pad(rows, (0, width - len(rows)), constant_values=-1) for rows in indices])


def _diagnostics(objective, gap, iterations, tol: float) -> dict[str, np.ndarray]:
    relative = gap / np.maximum(np.abs(objective), 1e-30)
    return {"objective": objective, "gap": relative, "converged": relative <= tol, "iterations": iterations}


def _closed_form(shape) -> dict[str, np.ndarray]:
    return {"objective": np.full(shape, np.nan), "gap": np.zeros(shape), "converged": np.ones(shape, bool),
            "iterations": np.zeros(shape, int)}


@dataclasses.dataclass
class _Solved:
    """Host copies of one ``programs.fit`` call, logistic logits shifted to their certified intercepts."""

    sites: int
    ridge_held: np.ndarray
    ridge_train: np.ndarray
    ridge_eval: np.ndarray
    train_logits: np.ndarray  # [S, P, L, N, C]
    eval_logits: np.ndarray  # [S, P, L, M, C]
    diagnostics: dict[str, np.ndarray]  # [S, P, L]


def _solve_block(x_fit, rows, x_eval, problems: Problems, spec: FitSpec, mesh: Mesh | None) -> _Solved:
    sites = x_fit.shape[0]
    span = programs.spans(programs.place(mesh, x_fit), jax.numpy.asarray(rows),
                          programs.place(mesh, x_eval), mesh)
    fits = programs.fit(span, problems, spec.grid("ridge"), spec.grid("logistic"), kinds=spec.kinds,
                        num_classes=spec.num_classes, max_iter=spec.max_iter, tol=spec.tol, mesh=mesh)
    ridge_held, ridge_train, ridge_eval = (np.asarray(a)[:sites] for a in fits[:3])
    path = fits.logistic
    if "logistic" not in spec.kinds:
        return _Solved(sites, ridge_held, ridge_train, ridge_eval, np.empty(0), np.empty(0), {})
    shift, objective, gap = programs.certify(span.z, path.params, problems.labels, problems.weights,
                                             spec.grid("logistic"), spec.num_classes, mesh)
    shift = shift[:sites].astype(np.float32)
    train_logits = np.swapaxes(np.asarray(path.train_logits)[:sites], -1, -2) + shift[..., None, :]
    eval_logits = np.asarray(path.eval_logits)[:sites] + shift[..., None, :]
    iterations = np.asarray(path.iterations)[:sites]
    diagnostics = _diagnostics(objective[:sites], gap[:sites], iterations, spec.tol)
    return _Solved(sites, ridge_held, ridge_train, ridge_eval, train_logits, eval_logits, diagnostics)


def _solve(x_fit, rows, x_eval, problems: Problems, spec: FitSpec, mesh: Mesh | None) -> _Solved:
    """``_solve_block`` over blocks of ``spec.block`` sites (the last padded with copies), so every block reuses
    one compiled program and a block's fits wait only for that block's slowest problem."""
    devices = 1 if mesh is None else mesh.devices.size
    size = -(-min(spec.block, x_fit.shape[0]) // devices) * devices
    parts = []
    for start in range(0, x_fit.shape[0], size):
        count = min(size, x_fit.shape[0] - start)
        block = [pad_to_multiple(np.asarray(x[start:start + count], np.float32), size) for x in (x_fit, x_eval)]
        parts.append(_first(_solve_block(block[0], rows, block[1], problems, spec, mesh), count))
    return _Solved(x_fit.shape[0], *(np.concatenate([getattr(part, name) for part in parts]) for name in _ARRAYS),
                   {key: np.concatenate([part.diagnostics[key] for part in parts]) for key in parts[0].diagnostics})


_ARRAYS = ("ridge_held", "ridge_train", "ridge_eval", "train_logits", "eval_logits")


def _first(solved: _Solved, count: int) -> _Solved:
    """The first ``count`` sites of a padded block."""
    return _Solved(count, *(getattr(solved, name)[:count] for name in _ARRAYS),
                   {key: value[:count] for key, value in solved.diagnostics.items()})


def _problems(train_labels: np.ndarray, fold_weights: list[np.ndarray], control: np.ndarray | None,
              held: np.ndarray) -> Problems:
    """Logistic problems: the folds' (if any), the refit, then the control; ridge: real labels, then control."""
    ones = np.ones(len(train_labels), np.float32)
    label_sets = [train_labels] * (len(fold_weights) + 1) + ([control] if control is not None else [])
    weights = [*fold_weights, ones] + ([ones] if control is not None else [])
    ridge_labels = [train_labels] + ([control] if control is not None else [])
    return Problems(np.stack(label_sets), np.stack(weights).astype(np.float32), np.stack(ridge_labels), ones, held)


def _per_fold_scaled(features, train_labels, folds, spec: FitSpec, mesh) -> list[_Solved]:
    """Each fold standardised and decomposed on its own rows (padded to one shape), scored on its held-out
    rows."""
    fit_size, held_size = max(len(fit) for fit, _ in folds), max(len(held) for _, held in folds)
    solved = []
    for fit_rows, held_rows in folds:
        pad = fit_size - len(fit_rows)
        x_fit = np.pad(features[:, fit_rows], ((0, 0), (0, pad), (0, 0)))
        rows = np.pad(np.ones(len(fit_rows), np.float32), (0, pad))
        labels = np.pad(train_labels[fit_rows], (0, pad))
        x_held = np.pad(features[:, held_rows], ((0, 0), (0, held_size - len(held_rows)), (0, 0)))
        problems = Problems(labels[None], rows[None], labels[None], rows, np.zeros((0, held_size), int))
        solved.append(_solve(x_fit, rows, x_held, problems, spec, mesh))
    return solved


def fit_linear(features_train: np.ndarray, train_labels: np.ndarray, features_test: np.ndarray,
               folds: list[tuple[np.ndarray, np.ndarray]], control: np.ndarray | None, spec: FitSpec,
               mesh: Mesh | None = None) -> dict[str, KindScores]:
    """Scores of every kind in ``spec`` for sites features_train [S, N, D] (labels [N]) over ``folds`` (index
    pairs into the training rows), their refit scored on features_test [S, M, D], and the refit on ``control``
    labels [N] (None: no control task)."""
    shared = spec.fold_scaling == "train"
    rows = np.arange(len(train_labels))
    fold_weights = [np.isin(rows, fit).astype(np.float32) for fit, _ in folds] if shared else []
    held = _padded([held for _, held in folds]) if shared else np.zeros((0, 1), int)
    problems = _problems(train_labels, fold_weights, control, held)
    whole = _solve(features_train, problems.rows, features_test, problems, spec, mesh)
    per_fold = None if shared else _per_fold_scaled(features_train, train_labels, folds, spec, mesh)
    return {kind: _kind_scores(kind, whole, per_fold, folds, control is not None, spec) for kind in spec.kinds}


def _kind_scores(kind: str, whole: _Solved, per_fold: list[_Solved] | None, folds, has_control: bool,
                 spec: FitSpec) -> KindScores:
    sizes = [len(held) for _, held in folds]
    refit = len(folds) if per_fold is None else 0  # the refit's problem index
    if kind == "ridge":
        if per_fold is None:
            validation = [whole.ridge_held[:, f, :, :size] for f, size in enumerate(sizes)]
        else:
            validation = [solved.ridge_eval[:, 0, :, :size] for solved, size in zip(per_fold, sizes, strict=True)]
        control = whole.ridge_train[:, 1] if has_control else None
        shape = whole.ridge_eval.shape[:1] + whole.ridge_eval.shape[2:3]
        return KindScores(validation, whole.ridge_eval[:, 0], whole.ridge_train[:, 0], control,
                          [_closed_form(shape)] * len(folds), _closed_form(shape))
    if per_fold is None:
        validation = [whole.train_logits[:, f][:, :, held] for f, (_, held) in enumerate(folds)]
        fold_diagnostics = [{key: value[:, f] for key, value in whole.diagnostics.items()} for f in range(len(folds))]
    else:
        validation = [solved.eval_logits[:, 0, :, :size] for solved, size in zip(per_fold, sizes, strict=True)]
        fold_diagnostics = [{key: value[:, 0] for key, value in solved.diagnostics.items()} for solved in per_fold]
    control = whole.train_logits[:, refit + 1] if has_control else None
    return KindScores(validation, whole.eval_logits[:, refit], whole.train_logits[:, refit], control,
                      fold_diagnostics, {key: value[:, refit] for key, value in whole.diagnostics.items()})


def fit_eval(kinds: dict[str, np.ndarray], x_fit: np.ndarray, labels: np.ndarray, mask: np.ndarray,
             x_eval: np.ndarray, num_classes: int, mesh: Mesh | None = None, max_iter: int = 100,
             tol: float = DEFAULT_TOL, diagnostics: bool = False):
    """Scores {kind: [S, K, L, M, C]} on x_eval [S, M, D] of probes fitted on x_fit [S, N, D] (rows with mask 0
    ignored) for label sets labels [K, N] and each kind's lambdas (decreasing). Ridge scores are decision values,
    logistic scores logits (at the certified intercept). With ``diagnostics``, also the logistic fits'
    ``objective``, relative ``gap``, ``converged`` and ``iterations`` [S, K, L]."""
    unknown = set(kinds) - set(LINEAR_KINDS)
    if unknown:
        raise ValueError(f"unknown linear probe kinds {sorted(unknown)}; expected some of {LINEAR_KINDS}")
    spec = FitSpec({kind: np.asarray(grid, np.float32) for kind, grid in kinds.items()}, num_classes, max_iter, tol)
    labels, rows = np.asarray(labels), np.asarray(mask, np.float32)
    weights = np.broadcast_to(rows, labels.shape).astype(np.float32)
    problems = Problems(labels, weights, labels, rows, np.zeros((0, 1), int))
    solved = _solve(np.asarray(x_fit, np.float32), rows, np.asarray(x_eval, np.float32), problems, spec, mesh)
    scores = {kind: solved.ridge_eval if kind == "ridge" else solved.eval_logits for kind in spec.kinds}
    return (scores, solved.diagnostics) if diagnostics else scores
