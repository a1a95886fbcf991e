"""Linear-probe throughput: jaxprobe (all sites x lambdas at once) vs scikit-learn fitted in a loop.

Workload of one study cell: S sites x 16 lambdas x (5 CV folds + 1 refit) on features with a planted class
signal, N in {780, 5856} rows, D in {1280, 3584}. scikit-learn is timed as a researcher's loop runs it (a
StandardScaler + model pipeline fitted on the training rows, then predictions) on a dozen (site, lambda) pairs
spread over the sites and the whole lambda grid, each fitted on a fold's and on all training rows, and its
per-fit time extrapolated to the workload (a full loop would take hours); accuracies of the two on the same
refits are compared so the speed is "at matched accuracy".
Each kind is timed alone, and both together as ``jaxprobe probe`` fits them (one eigendecomposition per site and
fold serves both). Results: results/probe_throughput[_quick].json and .md.
Usage: ``python -m benchmarks.probe_throughput [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks import machine
from jaxprobe.parallel import probe_mesh

from jaxprobe.probes.fit import fit_eval
from jaxprobe.stats.folds import kfold

RESULTS = Path(__file__).parent / "results"
LAMBDAS = {"ridge": np.logspace(4, -2, 16).astype(np.float32), "logistic": np.logspace(0, -5, 16).astype(np.float32)}
FOLDS = 5
EACH_KIND = (("logistic",), ("ridge",), ("ridge", "logistic"))
ENGINE_KINDS = (("ridge", "logistic"),)  # what ``jaxprobe probe`` fits by default
# (rows, width, classes, sites, sklearn fits timed, kind sets): sites shrink where S x N x D float32 would not fit
# beside the test machine's RAM; fewer sklearn fits are timed where each takes seconds; where N > D (one D x D
# eigendecomposition per site and fold, 3 s at D = 3584) only the engine's default kinds are timed
FULL = [(780, 1280, 3, 100, 12, EACH_KIND), (780, 3584, 3, 100, 8, EACH_KIND),
        (5856, 1280, 2, 32, 6, ENGINE_KINDS), (5856, 3584, 2, 4, 4, ENGINE_KINDS)]
QUICK = [(780, 1280, 3, 8, 12, EACH_KIND)]
SKLEARN_MAX_ITER = 1000  # researchers raise the default 100 to silence ConvergenceWarning


def planted_features(rows: int, width: int, classes: int, sites: int, seed: int = 0):
    """Sites with decreasing class signal in a 16-dim subspace plus isotropic noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(rows) % classes
    centres = rng.normal(size=(classes, 16)) @ rng.normal(size=(16, width)) / 4
    strength = np.linspace(1.0, 0.1, sites)[:, None, None]
    noise = rng.standard_normal((sites, rows, width), dtype=np.float32)
    return (noise + strength * centres[labels]).astype(np.float32), labels


def _split(rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Every fifth row is a test row (an 80/20 split, as in the study)."""
    is_test = np.arange(rows) % 5 == 0
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def jaxprobe_workload(features, labels, kinds, classes, mesh) -> tuple[float, float, dict]:
    """(seconds, compile seconds, refit test accuracy [S, L] per kind) for CV + refit of every site x lambda.

    Folds are padded to one shape, as the engine does, so the CV compiles once and the refit once; the compile
    seconds are the first fold's and the refit's time minus a second fold's (the same work, compiled).
    """
    train, test = _split(len(labels))
    folds = kfold(labels[train], FOLDS, seed=0)
    grids = {kind: LAMBDAS[kind] for kind in kinds}
    fit_size = max(len(fit) for fit, _ in folds)
    held_size = max(len(held) for _, held in folds)
    calls = []
    start = time.perf_counter()
    for fit, held in folds:
        x_fit, y_fit, mask = pad_rows(features, labels, train[fit], fit_size)
        x_held = pad_rows(features, labels, train[held], held_size)[0]
        fit_eval(grids, x_fit, y_fit[None], mask, x_held, classes, mesh)
        calls.append(time.perf_counter() - start - sum(calls))
    scores = fit_eval(grids, features[:, train], labels[train][None], np.ones(len(train)), features[:, test],
                      classes, mesh)
    seconds = time.perf_counter() - start
    refit = seconds - sum(calls)
    again = time.perf_counter()  # the refit once more, compiled, to split its compile time off
    fit_eval(grids, features[:, train], labels[train][None], np.ones(len(train)), features[:, test], classes, mesh)
    compile_seconds = calls[0] - float(np.median(calls[1:])) + refit - (time.perf_counter() - again)
    accuracy = {kind: (scores[kind][:, 0].argmax(-1) == labels[test]).mean(-1) for kind in kinds}  # [S, L]
    return seconds, max(compile_seconds, 0.0), accuracy


def sklearn_fit(kind: str, lam: float, x_train, y_train, x_test) -> np.ndarray:
    """One fit of the researcher's loop: scaler and model on the training rows, predictions on the test rows."""
    model = (RidgeClassifier(alpha=lam) if kind == "ridge"
             else LogisticRegression(C=1 / (lam * len(y_train)), max_iter=SKLEARN_MAX_ITER))
    pipeline = make_pipeline(StandardScaler(), model).fit(x_train, y_train)
    return pipeline.predict(x_test)


def sklearn_per_fit(features, labels, kind: str, fits: int) -> tuple[float, list[tuple[int, int, float]]]:
    """Mean seconds of one scikit-learn fit of the workload, and the refit's test accuracies, over ``fits``
    (site, lambda) pairs spread over the sites and the whole grid (fit time varies 20x along it).

    Each pair is timed on a CV fold's training rows and on all training rows, weighted 5 : 1 as the workload
    fits them (fold fits have a fifth fewer rows, so timing only refits would flatter jaxprobe).
    """
    train, test = _split(len(labels))
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


def run_config(rows: int, width: int, classes: int, sites: int, sklearn_fits: int, kind_sets, mesh) -> dict:
    features, labels = planted_features(rows, width, classes, sites)
    fits = sites * 16 * (FOLDS + 1)
    result = {"rows": rows, "width": width, "classes": classes, "sites": sites, "fits_per_kind": fits}
    per_fit = {}
    for kinds in kind_sets:
        name = "+".join(kinds)
        seconds, compile_seconds, accuracy = jaxprobe_workload(features, labels, kinds, classes, mesh)
        for kind in kinds:
            per_fit.setdefault(kind, sklearn_per_fit(features, labels, kind, sklearn_fits))
        sklearn_seconds = sum(fits * per_fit[kind][0] for kind in kinds)  # the loop over every fit of every kind
        picks = [{"kind": kind, "site": site, "lambda": float(LAMBDAS[kind][lam]), "sklearn_accuracy": acc,
                  "jaxprobe_accuracy": float(accuracy[kind][site, lam])}
                 for kind in kinds for site, lam, acc in per_fit[kind][1]]
        gaps = [abs(pick["sklearn_accuracy"] - pick["jaxprobe_accuracy"]) for pick in picks]
        steady = seconds - compile_seconds
        result[name] = {"jaxprobe_seconds": round(seconds, 2), "jaxprobe_compile_seconds": round(compile_seconds, 2),
                        "jaxprobe_fits_per_s": round(len(kinds) * fits / seconds, 1),
                        "sklearn_seconds_per_fit": {kind: round(per_fit[kind][0], 4) for kind in kinds},
                        "sklearn_fits_timed": sklearn_fits,
                        "sklearn_seconds_extrapolated": round(sklearn_seconds, 1),
                        "speedup": round(sklearn_seconds / seconds, 1),
                        "speedup_excl_compile": round(sklearn_seconds / steady, 1),
                        "max_test_accuracy_gap_points": round(100 * max(gaps), 2), "matched_fits": picks}
        print(json.dumps({"rows": rows, "width": width, name: {key: value for key, value in result[name].items()
                                                                if key != "matched_fits"}}), flush=True)
    return result


def write_markdown(report: dict, path: Path) -> None:
    lines = [f"Machine: {report['machine']}", "",
             "Speedup = scikit-learn loop seconds (per-fit time x fits) / jaxprobe seconds for the same fits; "
             "'incl. compile' counts jaxprobe's XLA compilation, 'excl.' does not.", "",
             "| N | D | sites | kinds | jaxprobe s (compile) | sklearn s | speedup incl. compile | excl. compile |"
             " max acc gap (pts) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for cell in report["linear"]:
        for name in ("logistic", "ridge", "ridge+logistic"):
            if name not in cell:
                continue
            r = cell[name]
            lines.append(f"| {cell['rows']} | {cell['width']} | {cell['sites']} | {name} | {r['jaxprobe_seconds']}"
                         f" ({r['jaxprobe_compile_seconds']}) | {r['sklearn_seconds_extrapolated']} |"
                         f" {r['speedup']}x | {r['speedup_excl_compile']}x | {r['max_test_accuracy_gap_points']} |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small configuration (smoke run)")
    args = parser.parse_args()
    mesh = probe_mesh()
    report = {"machine": machine.describe(), "quick": args.quick, "linear": []}
    RESULTS.mkdir(exist_ok=True)
    name = "probe_throughput_quick" if args.quick else "probe_throughput"
    for config in QUICK if args.quick else FULL:
        report["linear"].append(run_config(*config, mesh))
        (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=1))  # after each cell: long runs keep results
        write_markdown(report, RESULTS / f"{name}.md")
    print((RESULTS / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
