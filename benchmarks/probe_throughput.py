"""Linear-probe throughput: the probe engine (all sites x lambdas x folds at once) vs scikit-learn in a loop.

Workload of one study cell: S sites x 16 lambdas x (5 CV folds + 1 refit) per kind, on features with a planted
class signal, N in {780, 5856} rows, D in {1280, 3584}. jaxprobe runs ``jaxprobe.probes.fit.fit_linear`` (what
``jaxprobe probe`` runs for a stack of sites: one decomposition per site serving every fold, ridge by the
held-out identity, logistic along the lambda path, certified in float64). scikit-learn is timed as a
researcher's loop runs it (a StandardScaler + model pipeline fitted on a fold's or all training rows, then
predictions) on a dozen (site, lambda) pairs spread over the sites and the whole grid, and its per-fit time
extrapolated to the workload (a full loop would take hours); test accuracies of the two on the same refits are
compared, so the speed is "at matched accuracy". The machine's load average is recorded: this machine is shared,
and both sides of a ratio are measured in the same run.
Results: results/probe_throughput[_quick].json and .md. Usage: ``python -m benchmarks.probe_throughput [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks import machine
from jaxprobe.parallel import probe_mesh
from jaxprobe.probes.fit import FitSpec, fit_linear
from jaxprobe.stats.folds import kfold

RESULTS = Path(__file__).parent / "results"
LAMBDAS = {"ridge": np.logspace(4, -2, 16).astype(np.float32), "logistic": np.logspace(0, -5, 16).astype(np.float32)}
FOLDS = 5
KINDS = ("ridge", "logistic")
# (rows, width, classes, sites, sklearn fits timed per kind, fold scaling): sites shrink where S x N x D float32
# would not fit beside the machine's RAM; fewer sklearn fits are timed where each takes seconds.
FULL = [(780, 1280, 3, 100, 12, "train"), (780, 3584, 3, 100, 8, "train"), (780, 1280, 3, 32, 12, "fold"),
        (5856, 1280, 2, 32, 6, "train"), (5856, 3584, 2, 8, 4, "train")]
QUICK = [(780, 1280, 3, 8, 6, "train")]
SKLEARN_MAX_ITER = 1000  # researchers raise the default 100 to silence ConvergenceWarning


def planted_features(rows: int, width: int, classes: int, sites: int, seed: int = 0):
    """Sites with decreasing class signal in a 16-dim subspace plus isotropic noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(rows) % classes
    centres = rng.normal(size=(classes, 16)) @ rng.normal(size=(16, width)) / 4
    strength = np.linspace(1.0, 0.1, sites)[:, None, None]
    noise = rng.standard_normal((sites, rows, width), dtype=np.float32)
    return (noise + strength * centres[labels]).astype(np.float32), labels


def split(rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Every fifth row is a test row (an 80/20 split, as in the study)."""
    is_test = np.arange(rows) % 5 == 0
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def jaxprobe_workload(features, labels, classes, fold_scaling, mesh) -> tuple[float, float, dict, dict]:
    """(seconds, compile seconds, refit test accuracy [S, L] per kind, logistic fit diagnostics) for CV + refit
    of every site x lambda; compile seconds = the first call minus a second, compiled, call."""
    train, test = split(len(labels))
    folds = kfold(labels[train], FOLDS, seed=0)
    spec = FitSpec(LAMBDAS, classes, fold_scaling=fold_scaling)
    args = (features[:, train], labels[train], features[:, test], folds, None, spec, mesh)
    start = time.perf_counter()
    scores = fit_linear(*args)
    first = time.perf_counter() - start
    again = time.perf_counter()
    fit_linear(*args)
    seconds = time.perf_counter() - again
    accuracy = {kind: (scores[kind].test.argmax(-1) == labels[test]).mean(-1) for kind in KINDS}  # [S, L]
    diagnostics = scores["logistic"].refit_diagnostics
    converged = np.mean([d["converged"].mean() for d in [*scores["logistic"].fold_diagnostics, diagnostics]])
    summary = {"certified_fraction": round(float(converged), 4), "max_gap": float(
        max(d["gap"].max() for d in [*scores["logistic"].fold_diagnostics, diagnostics])),
        "mean_iterations": round(float(np.mean([d["iterations"].mean() for d in scores["logistic"].fold_diagnostics])),
                                 1)}
    return first, max(first - seconds, 0.0), accuracy, summary


def sklearn_fit(kind: str, lam: float, x_train, y_train, x_test) -> np.ndarray:
    """One fit of the researcher's loop: scaler and model on the training rows, predictions on the test rows."""
    model = (RidgeClassifier(alpha=lam) if kind == "ridge"
             else LogisticRegression(C=1 / (lam * len(y_train)), max_iter=SKLEARN_MAX_ITER))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipeline = make_pipeline(StandardScaler(), model).fit(x_train, y_train)
    return pipeline.predict(x_test)


def sklearn_per_fit(features, labels, kind: str, fits: int) -> tuple[float, list[tuple[int, int, float]]]:
    """Mean seconds of one scikit-learn fit of the workload, and the refit's test accuracies, over ``fits``
    (site, lambda) pairs spread over the sites and the whole grid (fit time varies 20x along it).

    Each pair is timed on a CV fold's training rows and on all training rows, weighted 5 : 1 as the workload
    fits them (fold fits have a fifth fewer rows, so timing only refits would flatter jaxprobe).
    """
    train, test = split(len(labels))
    fold_rows = train[kfold(labels[train], FOLDS, seed=0)[0][0]]
    sites = np.linspace(0, len(features) - 1, fits).round().astype(int)
    lam_indices = np.linspace(0, len(LAMBDAS[kind]) - 1, fits).round().astype(int)[::-1] % len(LAMBDAS[kind])
    seconds, accuracies = 0.0, []
    for site, lam_index in zip(sites, np.random.default_rng(0).permutation(lam_indices), strict=True):
        lam = float(LAMBDAS[kind][lam_index])
        start = time.perf_counter()
        sklearn_fit(kind, lam, features[site, fold_rows], labels[fold_rows], features[site, test])
        middle = time.perf_counter()
        predicted = sklearn_fit(kind, lam, features[site, train], labels[train], features[site, test])
        seconds += (FOLDS * (middle - start) + time.perf_counter() - middle) / (FOLDS + 1)
        accuracies.append((int(site), int(lam_index), float((predicted == labels[test]).mean())))
    return seconds / fits, accuracies


def run_config(rows: int, width: int, classes: int, sites: int, sklearn_fits: int, fold_scaling: str, mesh) -> dict:
    features, labels = planted_features(rows, width, classes, sites)
    fits = sites * 16 * (FOLDS + 1)
    load_before = os.getloadavg()[0]
    seconds, compile_seconds, accuracy, logistic = jaxprobe_workload(features, labels, classes, fold_scaling, mesh)
    per_fit = {kind: sklearn_per_fit(features, labels, kind, sklearn_fits) for kind in KINDS}
    sklearn_seconds = sum(fits * per_fit[kind][0] for kind in KINDS)
    picks = [{"kind": kind, "site": site, "lambda": float(LAMBDAS[kind][lam]), "sklearn_accuracy": acc,
              "jaxprobe_accuracy": float(accuracy[kind][site, lam])} for kind in KINDS for site, lam, acc in
             per_fit[kind][1]]
    gaps = [abs(pick["sklearn_accuracy"] - pick["jaxprobe_accuracy"]) for pick in picks]
    result = {"rows": rows, "width": width, "classes": classes, "sites": sites, "fold_scaling": fold_scaling,
              "fits": 2 * fits, "jaxprobe_seconds": round(seconds, 2),
              "jaxprobe_compile_seconds": round(compile_seconds, 2),
              "sklearn_seconds_per_fit": {kind: round(per_fit[kind][0], 4) for kind in KINDS},
              "sklearn_fits_timed_per_kind": sklearn_fits, "sklearn_seconds_extrapolated": round(sklearn_seconds, 1),
              "speedup": round(sklearn_seconds / seconds, 1),
              "speedup_excl_compile": round(sklearn_seconds / max(seconds - compile_seconds, 1e-9), 1),
              "max_test_accuracy_gap_points": round(100 * max(gaps), 2), "logistic": logistic,
              "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)], "matched_fits": picks}
    print(json.dumps({k: v for k, v in result.items() if k != "matched_fits"}), flush=True)
    return result


def write_markdown(report: dict, path: Path) -> None:
    lines = [f"Machine: {report['machine']}", "",
             "ridge + logistic, 16 lambdas each x (5 folds + refit) per site. Speedup = scikit-learn loop seconds "
             "(per-fit time x fits) / jaxprobe seconds for the same fits, in the same run; 'incl. compile' counts "
             "jaxprobe's XLA compilation. Load = the machine's 1-minute load average (2 cores, shared) before and "
             "after the row.", "",
             "| N | D | sites | scaling | jaxprobe s (compile) | sklearn s | speedup incl. compile | excl. compile |"
             " max acc gap (pts) | logistic certified | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["linear"]:
        lines.append(f"| {r['rows']} | {r['width']} | {r['sites']} | {r['fold_scaling']} | {r['jaxprobe_seconds']}"
                     f" ({r['jaxprobe_compile_seconds']}) | {r['sklearn_seconds_extrapolated']} | {r['speedup']}x |"
                     f" {r['speedup_excl_compile']}x | {r['max_test_accuracy_gap_points']} |"
                     f" {r['logistic']['certified_fraction']} | {r['load_average']} |")
    path.write_text("\n".join(lines) + "\n")


def _key(row: dict) -> tuple:
    return row["rows"], row["width"], row["sites"], row["fold_scaling"]


def _key_of(config: tuple) -> tuple:
    return config[0], config[1], config[3], config[5]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small configuration (smoke run)")
    parser.add_argument("--configs", type=int, nargs="+", help="run only these rows of FULL (0-based); the results "
                        "file keeps the other rows it already holds")
    args = parser.parse_args()
    mesh = probe_mesh()
    report = {"machine": machine.describe(), "quick": args.quick, "linear": []}
    RESULTS.mkdir(exist_ok=True)
    name = "probe_throughput_quick" if args.quick else "probe_throughput"
    configs = QUICK if args.quick else [FULL[k] for k in args.configs] if args.configs else FULL
    if args.configs and (RESULTS / f"{name}.json").is_file():  # keep the rows of the configs not rerun
        kept = json.loads((RESULTS / f"{name}.json").read_text()).get("linear", [])
        report["linear"] = [row for row in kept if "fold_scaling" in row  # rows of this benchmark's format only
                            and _key(row) not in {_key_of(config) for config in configs}]
    for config in configs:
        report["linear"].append(run_config(*config, mesh))
        report["linear"].sort(key=lambda row: [_key_of(c) for c in FULL].index(_key(row))
                              if _key(row) in [_key_of(c) for c in FULL] else len(FULL))
        (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=1))  # after each cell: long runs keep results
        write_markdown(report, RESULTS / f"{name}.md")
    print((RESULTS / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
