"""Linear probes agree with scikit-learn; the engine selects, controls and refuses bad input."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.preprocessing import StandardScaler

from jaxprobe.errors import DatasetError, FeatureError
from jaxprobe.parallel import probe_mesh
from jaxprobe.probes import linear
from jaxprobe.probes.engine import ProbeSettings, ProbeTask, probe_task
from jaxprobe.probes.fit import fit_eval


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x, y = x[:700].astype(np.float32), y[:700]
    scaler = StandardScaler().fit(x[:500])
    return x[:500], y[:500], x[500:], y[500:], scaler


def _sklearn_logistic_objective(model, x, y, lam):
    probs = model.predict_proba(x)
    return -np.log(probs[np.arange(len(y)), y]).mean() + 0.5 * lam * np.sum(model.coef_**2)


@pytest.mark.parametrize("wide", [False, True])  # N > D (primal) and N < D (span of the training rows)
def test_logistic_matches_sklearn(digits, wide):
    x_train, y_train, x_test, y_test, scaler = digits
    if wide:  # 120 training rows, 64 features padded to 200 with noise columns: N < D
        rng = np.random.default_rng(0)
        x_train, y_train = x_train[:120], y_train[:120]
        x_train, x_test = (np.concatenate([x, rng.normal(size=(len(x), 136)).astype(np.float32)], 1)
                           for x in (x_train, x_test))
        scaler = StandardScaler().fit(x_train)
    lambdas = np.array([1e-1, 1e-2, 1e-3], np.float32)
    scores = fit_eval({"logistic": lambdas}, x_train[None], y_train[None], np.ones(len(y_train)), x_test[None], 10)
    scores = scores["logistic"]
    ours_objective = _objectives(x_train, y_train, lambdas)
    for i, lam in enumerate(lambdas):
        model = LogisticRegression(C=1 / (lam * len(y_train)), tol=1e-10, max_iter=20000)
        model.fit(scaler.transform(x_train).astype(np.float64), y_train)
        reference = _sklearn_logistic_objective(model, scaler.transform(x_train), y_train, lam)
        assert abs(ours_objective[i] - reference) <= 1e-3 * reference
        ours_accuracy = (scores[0, 0, i].argmax(-1) == y_test).mean()
        assert abs(ours_accuracy - model.score(scaler.transform(x_test), y_test)) <= 0.005 + 1e-9  # 0.5 points


def _objectives(x_train, y_train, lambdas):
    mask = np.ones(len(y_train), np.float32)
    (x,) = linear.standardize(x_train, mask)
    z, z_eval, eigenvalues = linear.span_coordinates(x, mask, x[:1])
    _, objectives, _ = linear.logistic_path(z, y_train, mask, lambdas, z_eval, num_classes=10,
                                            eigenvalues=eigenvalues)
    return np.asarray(objectives)


def test_ridge_predictions_equal_ridge_classifier(digits):
    x_train, y_train, x_test, _, scaler = digits
    lambdas = np.array([100.0, 1.0, 0.01], np.float32)
    scores = fit_eval({"ridge": lambdas}, x_train[None], y_train[None], np.ones(len(y_train)), x_test[None], 10)
    scores = scores["ridge"]
    for i, lam in enumerate(lambdas):
        model = RidgeClassifier(alpha=float(lam)).fit(scaler.transform(x_train), y_train)
        np.testing.assert_array_equal(scores[0, 0, i].argmax(-1), model.predict(scaler.transform(x_test)))
        # our targets are one-hot {0, 1}; scikit-learn's are {-1, 1}: decision values differ by 2x - 1
        np.testing.assert_allclose(2 * scores[0, 0, i] - 1, model.decision_function(scaler.transform(x_test)),
                                   atol=2e-3)


def test_masked_rows_have_no_influence(digits):
    x_train, y_train, x_test, _, _ = digits
    garbage = np.random.default_rng(1).normal(100, 50, (37, x_train.shape[1])).astype(np.float32)
    padded_x = np.concatenate([x_train, garbage])[None]
    padded_y = np.concatenate([y_train, np.zeros(37, int)])[None]
    mask = np.concatenate([np.ones(len(y_train)), np.zeros(37)])
    kinds = {"ridge": [0.01], "logistic": [0.01]}
    clean = fit_eval(kinds, x_train[None], y_train[None], np.ones(len(y_train)), x_test[None], 10)
    padded = fit_eval(kinds, padded_x, padded_y, mask, x_test[None], 10)
    for kind in kinds:
        np.testing.assert_allclose(padded[kind], clean[kind], atol=2e-3)


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


def test_engine_selects_controls_and_orders_sites():
    task = _task(np.random.default_rng(0))
    settings = ProbeSettings(ridge_lambdas=(100.0, 1.0), logistic_lambdas=(0.1, 0.001), folds=3, permutations=9,
                             bootstrap=200)
    rows = probe_task(task, settings)
    chosen = rows[rows.selected].set_index(["kind", "site"])
    assert len(chosen) == 6 and set(rows.split) == {"val", "test"}
    assert len(rows[rows.split == "val"]) == 2 * 3 * 2 * 3  # kinds x sites x lambdas x folds
    for kind in ("ridge", "logistic"):
        accuracy = chosen.loc[kind, "accuracy"]
        assert accuracy["s0"] > 0.9 and accuracy["s0"] > accuracy["s1"] > accuracy["s2"] - 0.1
        assert chosen.loc[(kind, "s0"), "perm_p"] == pytest.approx(0.1)  # beats all 9 permutations
        assert chosen.loc[(kind, "s0"), "selectivity"] > 0.4
        assert chosen.loc[(kind, "s0"), "ci_low"] <= accuracy["s0"] <= chosen.loc[(kind, "s0"), "ci_high"]


def test_one_and_eight_devices_agree():
    task = _task(np.random.default_rng(1), sites=3)
    lambdas = np.array([1.0, 0.01], np.float32)
    x_fit, x_eval = task.features[:, task.train], task.features[:, task.test]
    labels = task.labels[task.train][None]
    assert len(jax.devices()) == 8
    kinds = {"ridge": lambdas, "logistic": lambdas}
    single = fit_eval(kinds, x_fit, labels, np.ones(len(task.train)), x_eval, 3, probe_mesh(1))
    sharded = fit_eval(kinds, x_fit, labels, np.ones(len(task.train)), x_eval, 3, probe_mesh(8))
    np.testing.assert_allclose(sharded["ridge"], single["ridge"], atol=1e-4)
    # per-device batch shapes change float rounding, so iterative fits stop at slightly different points
    np.testing.assert_allclose(sharded["logistic"], single["logistic"], atol=1e-2)
    np.testing.assert_array_equal(sharded["logistic"].argmax(-1), single["logistic"].argmax(-1))


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
