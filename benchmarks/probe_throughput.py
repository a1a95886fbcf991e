"""Linear-probe throughput: jaxprobe (all sites x lambdas at once) vs scikit-learn fitted in a loop.

Workload of one study cell: S sites x 16 lambdas x (5 CV folds + 1 refit) on features with a planted class
signal, N in {780, 5856} rows, D in {1280, 3584}. scikit-learn is timed on a few (site, lambda, fold) fits and
its per-fit time extrapolated to the same workload (a full sklearn loop would take hours); accuracies of the
two on the same fits are compared so the speed is "at matched accuracy". Results: results/probe_throughput.json
and .md. Usage: ``python -m benchmarks.probe_throughput [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.preprocessing import StandardScaler

from benchmarks import machine
from jaxprobe.data.splits import kfold
from jaxprobe.parallel import probe_mesh
from jaxprobe.probes.engine import pad_rows
from jaxprobe.probes.fit import fit_eval

RESULTS = Path(__file__).parent / "results"
LAMBDAS = {"ridge": np.logspace(4, -2, 16).astype(np.float32), "logistic": np.logspace(0, -5, 16).astype(np.float32)}
FOLDS = 5
# (rows, width, classes, sites): sites shrink where S x N x D float32 would not fit beside the test machine's RAM
FULL = [(780, 1280, 3, 100), (780, 3584, 3, 100), (5856, 1280, 2, 32), (5856, 3584, 2, 4)]
QUICK = [(780, 1280, 3, 8)]
SKLEARN_FITS = 3


def planted_features(rows: int, width: int, classes: int, sites: int, seed: int = 0):
    """Sites with decreasing class signal in a 16-dim subspace plus isotropic noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(rows) % classes
    centres = rng.normal(size=(classes, 16)) @ rng.normal(size=(16, width)) / 4
    strength = np.linspace(1.0, 0.1, sites)[:, None, None]
    noise = rng.standard_normal((sites, rows, width), dtype=np.float32)
    return (noise + strength * centres[labels]).astype(np.float32), labels


def jaxprobe_workload(features, labels, kinds, classes, mesh) -> tuple[float, dict]:
    """Seconds for CV + refit of every site x lambda of ``kinds``; also the refit test accuracy per kind."""
    train, test = np.arange(len(labels)) % 5 != 0, np.arange(len(labels)) % 5 == 0
    train, test = np.flatnonzero(train), np.flatnonzero(test)
    folds = kfold(labels[train], FOLDS, seed=0)
    grids = {kind: LAMBDAS[kind] for kind in kinds}
    fit_size = max(len(fit) for fit, _ in folds)  # folds padded to one shape, as the engine does: one compile
    held_size = max(len(held) for _, held in folds)
    start = time.perf_counter()
    for fit, held in folds:
        x_fit, y_fit, mask = pad_rows(features, labels, train[fit], fit_size)
        x_held = pad_rows(features, labels, train[held], held_size)[0]
        fit_eval(grids, x_fit, y_fit[None], mask, x_held, classes, mesh)
    scores = fit_eval(grids, features[:, train], labels[train][None], np.ones(len(train)), features[:, test],
                      classes, mesh)
    seconds = time.perf_counter() - start
    accuracy = {kind: (scores[kind][:, 0].argmax(-1) == labels[test]).mean(-1) for kind in kinds}  # [S, L]
    return seconds, accuracy


def sklearn_per_fit(features, labels, kind: str) -> tuple[float, list[tuple[int, int, float]]]:
    """Mean seconds of one scikit-learn fit over a few (site, lambda) pairs, and their test accuracies."""
    train, test = np.flatnonzero(np.arange(len(labels)) % 5 != 0), np.flatnonzero(np.arange(len(labels)) % 5 == 0)
    picks = [(0, 4), (len(features) // 2, 8), (len(features) - 1, 12)][:SKLEARN_FITS]
    seconds, accuracies = 0.0, []
    for site, lam_index in picks:
        scaler = StandardScaler().fit(features[site, train])
        x_train, x_test = scaler.transform(features[site, train]), scaler.transform(features[site, test])
        lam = float(LAMBDAS[kind][lam_index])
        model = (RidgeClassifier(alpha=lam) if kind == "ridge"
                 else LogisticRegression(C=1 / (lam * len(train)), max_iter=1000))
        start = time.perf_counter()
        model.fit(x_train, labels[train])
        seconds += time.perf_counter() - start
        accuracies.append((site, lam_index, model.score(x_test, labels[test])))
    return seconds / len(picks), accuracies


def run_config(rows: int, width: int, classes: int, sites: int, mesh) -> dict:
    features, labels = planted_features(rows, width, classes, sites)
    fits = sites * 16 * (FOLDS + 1)
    result = {"rows": rows, "width": width, "classes": classes, "sites": sites, "fits_per_kind": fits}
    for kind in ("logistic", "ridge"):
        # one run, compilation included: conservative for jaxprobe, and what a user waits for
        seconds, accuracy = jaxprobe_workload(features, labels, (kind,), classes, mesh)
        per_fit, reference = sklearn_per_fit(features, labels, kind)
        gaps = [abs(accuracy[kind][site, lam] - acc) for site, lam, acc in reference]
        result[kind] = {"jaxprobe_seconds_incl_compile": round(seconds, 2),
                        "jaxprobe_fits_per_s": round(fits / seconds, 1),
                        "sklearn_seconds_per_fit": round(per_fit, 4),
                        "sklearn_fits_per_s_extrapolated": round(1 / per_fit, 1),
                        "speedup": round(fits / seconds * per_fit, 1),
                        "max_test_accuracy_gap_points": round(100 * max(gaps), 2)}
        print(json.dumps({"rows": rows, "width": width, kind: result[kind]}), flush=True)
    return result


def write_markdown(report: dict, path: Path) -> None:
    lines = [f"Machine: {report['machine']}", "",
             "| N | D | sites | kind | jaxprobe fits/s | sklearn fits/s | speedup | max acc gap (pts) |",
             "|---|---|---|---|---|---|---|---|"]
    for cell in report["linear"]:
        for kind in ("logistic", "ridge"):
            r = cell[kind]
            lines.append(f"| {cell['rows']} | {cell['width']} | {cell['sites']} | {kind} | {r['jaxprobe_fits_per_s']}"
                         f" | {r['sklearn_fits_per_s_extrapolated']} | {r['speedup']}x |"
                         f" {r['max_test_accuracy_gap_points']} |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small configuration (smoke run)")
    args = parser.parse_args()
    mesh = probe_mesh()
    report = {"machine": machine.describe(), "quick": args.quick, "linear": []}
    for config in QUICK if args.quick else FULL:
        report["linear"].append(run_config(*config, mesh))
    RESULTS.mkdir(exist_ok=True)
    name = "probe_throughput_quick" if args.quick else "probe_throughput"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=1))
    write_markdown(report, RESULTS / f"{name}.md")
    print((RESULTS / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
