"""The study's MLP protocol as a probe kind: every site x seed trained on ``train``, scored on ``test``.

The protocol has no regularisation grid, so there is nothing to select by cross-validation; each seed gives a
row, and the site's selected row is the mean over seeds (its interval bootstraps the per-image correctness
averaged over seeds, its permutation p-value tests the seed-averaged predictions). The control task is not run
for this kind (it would double the most expensive trainer).
"""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd
from jax.sharding import Mesh

from jaxprobe.probes.controls import permutation_p_values
from jaxprobe.probes.mlp import MlpProtocol, fit_mlp_probes
from jaxprobe.stats.metrics import classification_metrics
from jaxprobe.stats.resampling import bootstrap_interval

MLP_KIND = "mlp"


def _standardized(features: np.ndarray, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = features[:, train].mean(1, keepdims=True)
    std = features[:, train].std(1, keepdims=True)
    scale = np.where(std > 0, std, 1.0)
    return (features[:, train] - mean) / scale, (features[:, test] - mean) / scale


def mlp_rows(task, seeds: tuple[int, ...], protocol: MlpProtocol, settings, mesh: Mesh | None) -> pd.DataFrame:
    """Test rows per site x seed plus one selected seed-mean row per site."""
    x_train, x_test = _standardized(task.features, task.train, task.test)
    sites, repeats = len(task.sites), len(seeds)
    keys = jax.random.split(jax.random.key(settings.seed), sites * repeats)
    probs = fit_mlp_probes(np.repeat(x_train, repeats, 0), np.tile(task.labels[task.train], (sites * repeats, 1)),
                           np.ones((sites * repeats, len(task.train)), bool), np.repeat(x_test, repeats, 0),
                           task.num_classes, keys, protocol, mesh)  # [S * R, M, C]
    labels = task.labels[task.test]
    metrics = classification_metrics(np.log(np.clip(probs, 1e-12, 1.0)), labels, task.num_classes, True)
    rows = pd.DataFrame({"site": np.repeat(task.sites, repeats), "kind": MLP_KIND, "lam": np.nan,
                         "seed": np.tile(seeds, sites), "fold": -1, "split": "test", "selected": False,
                         **{name: np.asarray(value) for name, value in metrics.items()}})
    correct = (probs.argmax(-1) == labels).reshape(sites, repeats, -1).mean(1)  # [S, M]
    rng = np.random.default_rng(settings.seed)
    low, high = bootstrap_interval(correct, settings.bootstrap, settings.ci_level, rng)
    mean_probs = probs.reshape(sites, repeats, *probs.shape[1:]).mean(1)
    perm_p = permutation_p_values(mean_probs.argmax(-1), labels, task.groups[task.test], task.num_classes,
                                  settings.permutations, rng)
    means = rows.groupby("site", sort=False)[list(metrics)].mean().reindex(task.sites).reset_index()
    means = means.assign(kind=MLP_KIND, lam=np.nan, seed=-1, fold=-1, split="test", selected=True, ci_low=low,
                         ci_high=high, control_accuracy=np.nan, perm_p=perm_p, selectivity=np.nan)
    return pd.concat([rows, means], ignore_index=True)
