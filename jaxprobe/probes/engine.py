"""Model selection and evaluation for stacks of sites: k-fold on train, refit, test, controls -> rows.

Input checks live here too, because a probe on bad input returns a number that looks fine: NaN/inf features,
a single-class training split, a class with no training rows and stacks of mixed widths are refused with what
to do about them (a class with fewer training rows or patients than folds is refused by ``kfold``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from jax.sharding import Mesh

from jaxprobe.errors import FeatureError
from jaxprobe.probes import controls
from jaxprobe.probes.fit import fit_eval
from jaxprobe.probes.linear import DEFAULT_TOL
from jaxprobe.probes.mlp import MlpProtocol
from jaxprobe.probes.mlp_rows import MLP_KIND, mlp_rows
from jaxprobe.stats.folds import kfold
from jaxprobe.stats.metrics import classification_metrics
from jaxprobe.stats.resampling import bootstrap_interval, permutation_p_value


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    """What to fit and how to select it (defaults mirror ``configs/demo.py``'s ``probe`` section)."""

    kinds: tuple[str, ...] = ("ridge", "logistic")
    ridge_lambdas: tuple[float, ...] = tuple(np.logspace(4, -2, 16).tolist())
    logistic_lambdas: tuple[float, ...] = tuple(np.logspace(0, -5, 16).tolist())
    folds: int = 5
    grouped_folds: bool = True
    seed: int = 0
    control_task: bool = True
    permutations: int = 20
    bootstrap: int = 1000
    ci_level: float = 0.95
    max_iter: int = 100  # scikit-learn's LogisticRegression default too
    tol: float = DEFAULT_TOL  # relative predicted decrease at which a logistic fit stops (probes.lbfgs)
    mlp_seeds: tuple[int, ...] = (0,)
    mlp_hidden: int = 256
    mlp_epochs: int = 20

    @property
    def linear_kinds(self) -> tuple[str, ...]:
        return tuple(kind for kind in self.kinds if kind != MLP_KIND)

    def lambdas(self, kind: str) -> np.ndarray:
        """The grid, largest first (the order of rows in ``probes.parquet``)."""
        grid = self.ridge_lambdas if kind == "ridge" else self.logistic_lambdas
        return np.sort(np.asarray(grid, np.float32))[::-1]


@dataclasses.dataclass(frozen=True)
class ProbeTask:
    """Equal-width site features and the labels/partition they are probed against."""

    sites: list[str]
    features: np.ndarray  # [S, N, D]
    labels: np.ndarray  # [N]
    groups: np.ndarray  # [N]
    train: np.ndarray  # row indices
    test: np.ndarray
    num_classes: int


def check_task(task: ProbeTask) -> None:
    """Refuse inputs that would give silently wrong probes."""
    finite = np.isfinite(task.features).all(axis=-1)  # [S, N]
    if not finite.all():
        bad_sites = [task.sites[s] for s in np.flatnonzero(~finite.all(axis=1))]
        bad_rows = np.flatnonzero(~finite.all(axis=0))
        raise FeatureError(f"NaN/inf features at sites {bad_sites[:5]} for rows {bad_rows[:10].tolist()}; "
                           "re-extract them (a float16 store can overflow: use float32) or drop those rows")
    if task.features.ndim != 3 or task.features.shape[0] != len(task.sites):
        raise FeatureError(f"features must be one [sites, rows, width] stack for {len(task.sites)} sites, got shape "
                           f"{task.features.shape}; stack each width group on its own")
    present = np.unique(task.labels[task.train])
    if len(present) < 2:
        raise FeatureError(f"the training split holds only class {present.tolist()}; probing needs two or more")
    absent = sorted(set(range(task.num_classes)) - set(present.tolist()))
    if absent:
        raise FeatureError(f"classes {absent} have no training rows, so no probe can learn them and test metrics "
                           "would count them as always wrong; move some of their rows to 'train' or drop the class")
    if len(task.test) == 0:
        raise FeatureError("the test split is empty; assign some rows to 'test'")


def pad_rows(features: np.ndarray, labels: np.ndarray, rows: np.ndarray, size: int):
    """Features [S, size, D], labels [size], mask [size] of ``rows`` padded with masked zeros."""
    pad = size - len(rows)
    x = np.pad(features[:, rows], ((0, 0), (0, pad), (0, 0)))
    return x, np.pad(labels[rows], (0, pad)), np.pad(np.ones(len(rows), np.float32), (0, pad))


def _metric_rows(task: ProbeTask, kind: str, lambdas: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                 split: str, fold: int) -> pd.DataFrame:
    """One row per site x lambda from scores [S, L, M, C]."""
    values = classification_metrics(scores, labels, task.num_classes, probabilistic=kind == "logistic")
    sites, lams = np.meshgrid(np.arange(len(task.sites)), np.arange(len(lambdas)), indexing="ij")
    frame = pd.DataFrame({"site": np.asarray(task.sites)[sites.ravel()], "kind": kind,
                          "lam": lambdas[lams.ravel()], "seed": 0, "fold": fold, "split": split})
    for name, value in values.items():
        frame[name] = np.asarray(value).ravel()
    return frame


def cross_validate(task: ProbeTask, settings: ProbeSettings, mesh: Mesh | None) -> pd.DataFrame:
    """Validation metrics for every kind x site x lambda x fold of k-fold on the training rows."""
    grids = {kind: settings.lambdas(kind) for kind in settings.linear_kinds}
    train_labels = task.labels[task.train]
    groups = task.groups[task.train] if settings.grouped_folds else None
    folds = kfold(train_labels, settings.folds, settings.seed, groups)
    fit_size = max(len(fit) for fit, _ in folds)
    frames = []
    for number, (fit, held) in enumerate(folds):
        x_fit, y_fit, mask = pad_rows(task.features, task.labels, task.train[fit], fit_size)
        x_val = task.features[:, task.train[held]]
        scores = fit_eval(grids, x_fit, y_fit[None], mask, x_val, task.num_classes, mesh, settings.max_iter,
                          settings.tol)
        for kind, grid in grids.items():
            frames.append(_metric_rows(task, kind, grid, scores[kind][:, 0], task.labels[task.train[held]], "val",
                                       number))
    return pd.concat(frames, ignore_index=True)


def select_lambdas(validation: pd.DataFrame, sites: list[str]) -> np.ndarray:
    """Per site, the lambda with the best mean validation accuracy; ties go to the stronger regulariser."""
    mean = validation.groupby(["site", "lam"], sort=False)["accuracy"].mean().reset_index()
    mean = mean.sort_values(["site", "accuracy", "lam"], ascending=[True, False, False])
    best = mean.drop_duplicates("site").set_index("site")["lam"]
    return best.loc[sites].to_numpy(np.float32)


def _control_columns(task: ProbeTask, kind: str, settings: ProbeSettings, selected: np.ndarray,
                     selected_scores: np.ndarray, mesh: Mesh | None) -> dict[str, np.ndarray]:
    """Control-task accuracy, selectivity, permutation p-value and bootstrap CI of each site's selected probe."""
    rng = np.random.default_rng(settings.seed)
    train_labels, test_labels = task.labels[task.train], task.labels[task.test]
    control = controls.control_labels(task.labels, task.groups, rng)
    label_sets = [control[task.train]] if settings.control_task else []
    label_sets += list(controls.permuted_labels(train_labels, settings.permutations, rng))
    correct = selected_scores.argmax(-1) == test_labels  # [S, M]
    accuracy = correct.mean(-1)
    columns = {"control_accuracy": np.full(len(task.sites), np.nan), "perm_p": np.full(len(task.sites), np.nan)}
    if label_sets:
        x_fit, x_test = task.features[:, task.train], task.features[:, task.test]
        scores = fit_eval({kind: selected[:, None]}, x_fit, np.stack(label_sets), np.ones(len(task.train)), x_test,
                          task.num_classes, mesh, settings.max_iter, settings.tol)[kind][:, :, 0]  # [S, K, M, C]
        predictions = scores.argmax(-1)
        if settings.control_task:
            columns["control_accuracy"] = (predictions[:, 0] == control[task.test]).mean(-1)
            predictions = predictions[:, 1:]
        null = (predictions == test_labels).mean(-1)  # [S, P]
        columns["perm_p"] = permutation_p_value(accuracy, null)
    columns["selectivity"] = accuracy - columns["control_accuracy"]
    columns["ci_low"], columns["ci_high"] = bootstrap_interval(correct, settings.bootstrap,
                                                                       settings.ci_level, rng)
    return columns


def evaluate_on_test(task: ProbeTask, settings: ProbeSettings, selected: dict[str, np.ndarray],
                     mesh: Mesh | None) -> pd.DataFrame:
    """Refit every lambda on all training rows, score the test rows, and add controls to the selected rows."""
    grids = {kind: settings.lambdas(kind) for kind in settings.linear_kinds}
    x_fit, x_test = task.features[:, task.train], task.features[:, task.test]
    all_scores = fit_eval(grids, x_fit, task.labels[task.train][None], np.ones(len(task.train)), x_test,
                          task.num_classes, mesh, settings.max_iter, settings.tol)
    frames = []
    for kind, lambdas in grids.items():
        scores = all_scores[kind][:, 0]  # [S, L, M, C]
        rows = _metric_rows(task, kind, lambdas, scores, task.labels[task.test], "test", -1)
        chosen = np.array([np.flatnonzero(lambdas == lam)[0] for lam in selected[kind]])
        rows["selected"] = rows["lam"].to_numpy() == np.repeat(selected[kind], len(lambdas))
        selected_scores = scores[np.arange(len(task.sites)), chosen]
        extra = _control_columns(task, kind, settings, selected[kind], selected_scores, mesh)
        for name, values in extra.items():
            rows[name] = np.nan
            rows.loc[rows["selected"], name] = values
        frames.append(rows)
    return pd.concat(frames, ignore_index=True)


def probe_task(task: ProbeTask, settings: ProbeSettings, mesh: Mesh | None = None) -> pd.DataFrame:
    """All rows (validation folds and test) for every kind in ``settings`` over one equal-width stack."""
    check_task(task)
    frames = []
    if settings.linear_kinds:
        validation = cross_validate(task, settings, mesh)
        validation["selected"] = False
        selected = {kind: select_lambdas(validation[validation.kind == kind], task.sites)
                    for kind in settings.linear_kinds}
        frames += [validation, evaluate_on_test(task, settings, selected, mesh)]
    if MLP_KIND in settings.kinds:
        protocol = MlpProtocol(hidden_size=settings.mlp_hidden, epochs=settings.mlp_epochs)
        frames.append(mlp_rows(task, settings.mlp_seeds, protocol, settings, mesh))
    return pd.concat(frames, ignore_index=True)
