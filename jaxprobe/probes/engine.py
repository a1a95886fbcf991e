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
from jaxprobe.probes.fit import FitSpec, KindScores, fit_linear
from jaxprobe.probes.mlp import MlpProtocol
from jaxprobe.probes.mlp_rows import MLP_KIND, mlp_rows
from jaxprobe.probes.settings import ProbeSettings, settings_from_config
from jaxprobe.stats.folds import kfold
from jaxprobe.stats.metrics import classification_metrics
from jaxprobe.stats.resampling import bootstrap_interval

__all__ = ["ProbeSettings", "ProbeTask", "check_task", "probe_task", "settings_from_config"]


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
    if task.features.ndim != 3 or task.features.shape[0] != len(task.sites):
        raise FeatureError(f"features must be one [sites, rows, width] stack for {len(task.sites)} sites, got shape "
                           f"{task.features.shape}; stack each width group on its own")
    finite = np.isfinite(task.features).all(axis=-1)  # [S, N]
    if not finite.all():
        bad_sites = [task.sites[s] for s in np.flatnonzero(~finite.all(axis=1))]
        bad_rows = np.flatnonzero(~finite.all(axis=0))
        raise FeatureError(f"NaN/inf features at sites {bad_sites[:5]} for rows {bad_rows[:10].tolist()}; "
                           "re-extract them (a float16 store can overflow: use float32) or drop those rows")
    present = np.unique(task.labels[task.train])
    if len(present) < 2:
        raise FeatureError(f"the training split holds only class {present.tolist()}; probing needs two or more")
    absent = sorted(set(range(task.num_classes)) - set(present.tolist()))
    if absent:
        raise FeatureError(f"classes {absent} have no training rows, so no probe can learn them and test metrics "
                           "would count them as always wrong; move some of their rows to 'train' or drop the class")
    if len(task.test) == 0:
        raise FeatureError("the test split is empty; assign some rows to 'test'")


DIAGNOSTICS = ("objective", "gap", "converged", "iterations")


def _metric_rows(task: ProbeTask, kind: str, lambdas: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                 split: str, fold: int, diagnostics: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per site x lambda from scores [S, L, M, C] and per-fit diagnostics [S, L]."""
    values = classification_metrics(scores, labels, task.num_classes, probabilistic=kind == "logistic")
    sites, lams = np.meshgrid(np.arange(len(task.sites)), np.arange(len(lambdas)), indexing="ij")
    frame = pd.DataFrame({"site": np.asarray(task.sites)[sites.ravel()], "kind": kind,
                          "lam": lambdas[lams.ravel()], "seed": 0, "fold": fold, "split": split})
    for name, value in {**values, **{key: diagnostics[key] for key in DIAGNOSTICS}}.items():
        frame[name] = np.asarray(value).ravel()
    return frame


def select_lambdas(validation: pd.DataFrame, sites: list[str]) -> np.ndarray:
    """Per site, the lambda with the best mean validation accuracy; ties go to the stronger regulariser."""
    mean = validation.groupby(["site", "lam"], sort=False)["accuracy"].mean().reset_index()
    mean = mean.sort_values(["site", "accuracy", "lam"], ascending=[True, False, False])
    best = mean.drop_duplicates("site").set_index("site")["lam"]
    return best.loc[sites].to_numpy(np.float32)


def _fold_layout(task: ProbeTask, settings: ProbeSettings) -> list[tuple[np.ndarray, np.ndarray]]:
    groups = task.groups[task.train] if settings.grouped_folds else None
    return kfold(task.labels[task.train], settings.folds, settings.seed, groups)


def _control_columns(task: ProbeTask, settings: ProbeSettings, scores: KindScores, chosen: np.ndarray,
                     control: np.ndarray | None, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Training fit, control fit, selectivity, permutation p-value and bootstrap CI of each selected probe."""
    sites = np.arange(len(task.sites))
    train_labels, test_labels = task.labels[task.train], task.labels[task.test]
    train_accuracy = (scores.train[sites, chosen].argmax(-1) == train_labels).mean(-1)
    control_accuracy = np.full(len(sites), np.nan)
    if control is not None:
        control_accuracy = (scores.control_train[sites, chosen].argmax(-1) == control).mean(-1)
    predictions = scores.test[sites, chosen].argmax(-1)  # [S, M]
    low, high = bootstrap_interval(predictions == test_labels, settings.bootstrap, settings.ci_level, rng)
    return {"train_accuracy": train_accuracy, "control_accuracy": control_accuracy,
            "selectivity": train_accuracy - control_accuracy, "ci_low": low, "ci_high": high,
            "perm_p": controls.permutation_p_values(predictions, test_labels, task.groups[task.test],
                                                    task.num_classes, settings.permutations, rng)}


def _kind_rows(task: ProbeTask, settings: ProbeSettings, kind: str, scores: KindScores, folds,
               control: np.ndarray | None) -> pd.DataFrame:
    lambdas = settings.lambdas(kind)
    train_labels = task.labels[task.train]
    validation = pd.concat([_metric_rows(task, kind, lambdas, scores.validation[f], train_labels[held], "val", f,
                                         scores.fold_diagnostics[f]) for f, (_, held) in enumerate(folds)])
    validation["selected"] = False
    selected = select_lambdas(validation, task.sites)
    test = _metric_rows(task, kind, lambdas, scores.test, task.labels[task.test], "test", -1,
                        scores.refit_diagnostics)
    chosen = np.array([np.flatnonzero(lambdas == lam)[0] for lam in selected])
    test["selected"] = test["lam"].to_numpy() == np.repeat(selected, len(lambdas))
    rng = np.random.default_rng(settings.seed)
    for name, values in _control_columns(task, settings, scores, chosen, control, rng).items():
        test[name] = np.nan
        test.loc[test["selected"], name] = values
    return pd.concat([validation, test], ignore_index=True)


def take_rows(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """features[:, rows], a view (no copy of a chunk of sites) when ``rows`` is a contiguous range."""
    if len(rows) and np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows))):
        return features[:, rows[0]:rows[0] + len(rows)]
    return features[:, rows]


def linear_rows(task: ProbeTask, settings: ProbeSettings, mesh: Mesh | None = None) -> pd.DataFrame:
    """Validation and test rows of every linear kind in ``settings``."""
    folds = _fold_layout(task, settings)
    rng = np.random.default_rng([settings.seed, 1])
    control = controls.control_labels(task.labels[task.train], rng) if settings.control_task else None
    spec = FitSpec({kind: settings.lambdas(kind) for kind in settings.linear_kinds}, task.num_classes,
                   settings.max_iter, settings.tol, settings.fold_scaling)
    scores = fit_linear(take_rows(task.features, task.train), task.labels[task.train],
                        take_rows(task.features, task.test), folds, control, spec, mesh)
    return pd.concat([_kind_rows(task, settings, kind, scores[kind], folds, control) for kind in spec.kinds],
                     ignore_index=True)


def probe_task(task: ProbeTask, settings: ProbeSettings, mesh: Mesh | None = None) -> pd.DataFrame:
    """All rows (validation folds and test) for every kind in ``settings`` over one equal-width stack."""
    check_task(task)
    frames = []
    if settings.linear_kinds:
        frames.append(linear_rows(task, settings, mesh))
    if MLP_KIND in settings.kinds:
        protocol = MlpProtocol(hidden_size=settings.mlp_hidden, epochs=settings.mlp_epochs)
        frames.append(mlp_rows(task, settings.mlp_seeds, protocol, settings, mesh))
    return pd.concat(frames, ignore_index=True)
