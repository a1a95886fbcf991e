"""The engine: lambda selection and test accuracy agree with scikit-learn pipelines; controls that can fail;
permutation p-values below 0.01 that separate signal from noise; bad input refused."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from jaxprobe.errors import DatasetError, FeatureError
from jaxprobe.probes import controls
from jaxprobe.probes.engine import ProbeSettings, ProbeTask, probe_task
from jaxprobe.stats.folds import kfold


class LambdaLogistic(ClassifierMixin, BaseEstimator):
    """LogisticRegression parametrised as the probes are: mean CE + lam/2 ||W||^2, i.e. C = 1 / (lam n) with n the
    rows it is fitted on (a fold's or the refit's)."""

    def __init__(self, lam: float = 1.0):
        self.lam = lam

    def fit(self, x, y):
        self.model_ = LogisticRegression(C=1 / (self.lam * len(y)), tol=1e-8, max_iter=5000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model_.fit(x, y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, x):
        return self.model_.predict(x)


@pytest.fixture(scope="module")
def digits_task() -> ProbeTask:
    """Digits pixels (one site) with every image its own group; 400 train, 300 test rows."""
    x, y = load_digits(return_X_y=True)
    x, y = x[:700].astype(np.float32), y[:700]
    return ProbeTask(["pixels"], x[None], y, np.arange(700).astype(str), np.arange(400), np.arange(400, 700), 10)


def _selected(rows: pd.DataFrame, kind: str) -> pd.Series:
    return rows[(rows.kind == kind) & rows.selected].iloc[0]


@pytest.mark.parametrize("fold_scaling", ["fold", "train"])
def test_selection_and_accuracy_match_sklearn_grid_search(digits_task, fold_scaling):
    """fold: StandardScaler inside the CV pipeline; train: scaled once with the training rows, as the engine's
    one decomposition per site assumes. Same folds, same grids, ties to the larger lambda (grid order)."""
    task, settings = digits_task, ProbeSettings(permutations=0, bootstrap=0, control_task=False,
                                                fold_scaling=fold_scaling)
    rows = probe_task(task, settings)
    x_train, y_train = task.features[0, task.train], task.labels[task.train]
    x_test, y_test = task.features[0, task.test], task.labels[task.test]
    folds = kfold(y_train, settings.folds, settings.seed, task.groups[task.train])
    if fold_scaling == "train":
        scaler = StandardScaler().fit(x_train)
        x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    for kind, model, key in [("logistic", LambdaLogistic(), "lam"), ("ridge", RidgeClassifier(), "alpha")]:
        grid = [float(lam) for lam in settings.lambdas(kind)]
        pipeline = make_pipeline(StandardScaler(), model) if fold_scaling == "fold" else model
        prefix = f"{type(model).__name__.lower()}__" if fold_scaling == "fold" else ""
        search = GridSearchCV(pipeline, {prefix + key: grid}, cv=folds, scoring="accuracy").fit(x_train, y_train)
        ours = _selected(rows, kind)
        assert ours.lam == pytest.approx(search.best_params_[prefix + key], rel=1e-6), kind
        assert abs(ours.accuracy - search.score(x_test, y_test)) <= 0.005 + 1e-9, kind


@pytest.fixture(scope="module")
def control_rows() -> pd.DataFrame:
    """Digits pixels (signal) and Gaussian noise of the same width, 1000 training rows: more rows than a 64-wide
    probe can memorise, so the real labels fit better than random ones only where there is signal."""
    x, y = load_digits(return_X_y=True)
    x, y = x[:1400].astype(np.float32), y[:1400]
    noise = np.random.default_rng(0).normal(size=x.shape).astype(np.float32)
    task = ProbeTask(["pixels", "noise"], np.stack([x, noise]), y, np.arange(1400).astype(str), np.arange(1000),
                     np.arange(1000, 1400), 10)
    return probe_task(task, ProbeSettings(kinds=("logistic",), bootstrap=200))


def test_controls_separate_signal_from_noise(control_rows):
    chosen = control_rows[control_rows.selected].set_index("site")
    signal, noise = chosen.loc["pixels"], chosen.loc["noise"]
    assert signal.perm_p == pytest.approx(1 / 1000)  # the floor of 999 permutations: p < 0.01
    assert noise.perm_p > 0.05
    assert signal.selectivity > 0.4
    assert abs(noise.selectivity) < 0.08
    # the noise probe fits its training labels above chance (capacity), which accuracy alone would count as
    # signal; the control task fits random labels just as well, so selectivity does not
    assert noise.train_accuracy - 0.1 > abs(noise.selectivity) + 0.05
    assert noise.ci_low <= noise.accuracy <= noise.ci_high and noise.ci_low < 0.2


def test_fits_are_certified_or_flagged(control_rows):
    logistic = control_rows[control_rows.kind == "logistic"]
    assert logistic.converged.mean() > 0.9
    assert (logistic.gap[logistic.converged] <= ProbeSettings().tol).all()
    assert (logistic.gap > 0).all() and logistic.objective.notna().all()


def test_balanced_statistic_on_imbalanced_labels():
    """90% of one class: a noise probe's accuracy sits near 0.9 but its p-value does not; a signal site's
    does."""
    rng = np.random.default_rng(1)
    n, width = 600, 20
    labels = (rng.random(n) < 0.1).astype(int)
    signal = rng.normal(size=(n, width)) + 3.0 * labels[:, None] * np.eye(1, width)
    features = np.stack([signal, rng.normal(size=(n, width))]).astype(np.float32)
    task = ProbeTask(["signal", "noise"], features, labels, np.arange(n).astype(str), np.arange(400),
                     np.arange(400, 600), 2)
    chosen = probe_task(task, ProbeSettings(kinds=("ridge",), bootstrap=0, folds=3)).query("selected")
    chosen = chosen.set_index("site")
    assert chosen.loc["noise", "accuracy"] > 0.8 and chosen.loc["noise", "perm_p"] > 0.05
    assert chosen.loc["signal", "perm_p"] < 0.01


def test_group_permutations_keep_groups_whole_and_p_values_exact():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(60), rng.integers(1, 4, 60))
    labels = rng.integers(0, 3, 60)[groups]
    permuted = labels[controls.group_permutations(groups, 200, rng)]
    for k in range(5):
        assert pd.Series(permuted[k]).groupby(groups).nunique().max() == 1  # one label per patient, as before
        np.testing.assert_array_equal(np.bincount(permuted[k], minlength=3), np.bincount(labels, minlength=3))
    # predictions independent of the labels: p-values are uniform (exact test), so about 10% fall below 0.1
    predictions = rng.integers(0, 3, (400, len(labels)))
    p = controls.permutation_p_values(predictions, labels, groups, 3, 199, rng)
    assert 0.05 < (p <= 0.1).mean() < 0.16
    assert controls.permutation_p_values(np.zeros((1, len(labels)), int), labels, groups, 3, 99, rng)[0] == 1.0


def _task(rng, sites=3, n=160, d=12, classes=3):
    labels = np.arange(n) % classes
    signal = np.eye(classes, d)[labels] * np.array([3.0, 1.0, 0.0])[:sites, None, None]
    features = (signal + rng.normal(size=(sites, n, d))).astype(np.float32)
    groups = np.array([f"p{i // 2}" for i in range(n)])  # two images per patient
    order = rng.permutation(n // 2)
    test_groups = {f"p{g}" for g in order[: n // 8]}
    test = np.flatnonzero(np.isin(groups, list(test_groups)))
    train = np.setdiff1d(np.arange(n), test)
    return ProbeTask([f"s{i}" for i in range(sites)], features, labels, groups, train, test, classes)


def test_bad_inputs_are_refused():
    rng = np.random.default_rng(2)
    task = _task(rng)
    task.features[1, 5, 3] = np.nan
    with pytest.raises(FeatureError, match=r"sites \['s1'\] for rows \[5\]"):
        probe_task(task, ProbeSettings())
    task = _task(rng)
    one_class = ProbeTask(task.sites, task.features, np.zeros_like(task.labels), task.groups, task.train,
                          task.test, 3)
    with pytest.raises(FeatureError, match="only class"):
        probe_task(one_class, ProbeSettings())
    no_train_rows = task.labels.copy()
    no_train_rows[task.train[no_train_rows[task.train] == 2]] = 1  # class 2 only in the test rows
    absent = ProbeTask(task.sites, task.features, no_train_rows, task.groups, task.train, task.test, 3)
    with pytest.raises(FeatureError, match=r"classes \[2\] have no training rows"):
        probe_task(absent, ProbeSettings())
    with pytest.raises(DatasetError, match="fewer than 5 groups"):  # a class too rare to appear in every fold
        rare = task.labels.copy()
        rare[task.train] = np.where(np.arange(len(task.train)) < 4, 2, task.labels[task.train] % 2)
        probe_task(ProbeTask(task.sites, task.features, rare, task.groups, task.train, task.test, 3),
                   ProbeSettings())
    mixed = ProbeTask(task.sites[:1], task.features, task.labels, task.groups, task.train, task.test, 3)
    with pytest.raises(FeatureError, match="one \\[sites, rows, width\\] stack"):
        probe_task(mixed, ProbeSettings())


def test_mlp_kind_through_the_engine():
    task = _task(np.random.default_rng(4), sites=2)
    settings = ProbeSettings(kinds=("mlp",), mlp_seeds=(0, 1), mlp_epochs=20, bootstrap=50)
    rows = probe_task(task, settings)
    assert len(rows) == 2 * 2 + 2 and set(rows.kind) == {"mlp"}
    chosen = rows[rows.selected].set_index("site")
    per_seed = rows[~rows.selected].groupby("site").accuracy.mean()
    assert chosen.loc["s0", "accuracy"] == pytest.approx(per_seed["s0"])
    assert chosen.loc["s0", "accuracy"] > chosen.loc["s1", "accuracy"] and chosen.loc["s0", "accuracy"] > 0.8
    assert chosen.loc["s0", "ci_low"] <= chosen.loc["s0", "accuracy"] <= chosen.loc["s0", "ci_high"]
    assert chosen.loc["s0", "perm_p"] < 0.01
