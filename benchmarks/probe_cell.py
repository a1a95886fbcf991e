"""Study-shaped cells end to end: ``jaxprobe probe WORKDIR`` (default config: ridge + logistic, 5 folds, control
task, 999 permutations, 1000 bootstrap resamples) on a real FeatureStore of 89 sites (32 x 1280 vision layers,
57 x 3584 connector and LLM sites) with random-but-structured features, timed as a fresh process (imports and
XLA compilation included) with its peak RSS; the BUSI cell also with a warm compilation cache.

Cells: BUSI-shaped (N = 780, 3 classes, 20% test) and chest-X-ray-shaped (N = 5856, 2 classes at 27/73%). The
features carry a class signal in a 16-dimensional subspace whose strength follows the depth of the site, shared
low-rank nuisance factors and isotropic noise. For the BUSI cell, scikit-learn's StandardScaler + model
pipeline is timed on a sample of the same fits (each kind, width and fold size) and extrapolated to all of them,
in the same run. Results: results/probe_cell.json and .md.
Usage: ``python -m benchmarks.probe_cell [--cells busi chest] [--store-dir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import machine
from benchmarks.probe_throughput import sklearn_fit
from jaxprobe.features import FeatureStore, FeatureStoreWriter
from jaxprobe.probes.settings import ProbeSettings

RESULTS = Path(__file__).parent / "results"
VISION, LLM_LAYERS = 32, 28
CELLS = {"busi": {"rows": 780, "classes": 3, "weights": (0.44, 0.36, 0.2)},
         "chest": {"rows": 5856, "classes": 2, "weights": (0.27, 0.73)}}
CHUNK_ROWS = 512
SKLEARN_SAMPLES = 4  # fits timed per kind x width x (fold, refit)


def site_specs() -> list[tuple[str, int, float]]:
    """(name, width, signal strength) of the 89 sites, in model order."""
    sites = [(f"vision.layer_{k:02d}", 1280, 0.4 + 0.6 * k / (VISION - 1)) for k in range(VISION)]
    sites.append(("connector.output", 3584, 0.8))
    for k in range(LLM_LAYERS):
        strength = 0.8 - 0.5 * k / (LLM_LAYERS - 1)
        sites += [(f"llm.layer_{k:02d}.image_mean", 3584, strength),
                  (f"llm.layer_{k:02d}.last_token", 3584, 0.6 * strength)]
    return sites


def write_store(path: Path, cell: dict, seed: int = 0) -> None:
    """A complete FeatureStore with structured features, written in chunks like ``jaxprobe extract`` does."""
    rng = np.random.default_rng(seed)
    rows, classes = cell["rows"], cell["classes"]
    labels = rng.choice(classes, rows, p=cell["weights"])
    index = pd.DataFrame({"row": np.arange(rows), "id": [f"img{i:05d}" for i in range(rows)], "label": labels,
                          "split": np.where(rng.random(rows) < 0.2, "test", "train"),
                          "group": [f"img{i:05d}" for i in range(rows)]})
    specs = site_specs()
    factors = rng.normal(size=(rows, 32)).astype(np.float32)  # nuisance shared by every site
    bases = {width: (rng.normal(size=(classes, 16)) @ rng.normal(size=(16, width)) / 16,
                     rng.normal(size=(32, width)) / 8) for width in {w for _, w, _ in specs}}
    writer = FeatureStoreWriter(path, index, [f"class_{c}" for c in range(classes)],
                                {name: width for name, width, _ in specs}, f"probe_cell:{rows}:{seed}")
    for start in range(0, rows, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, rows)
        chunk = {}
        for k, (name, width, strength) in enumerate(specs):
            noise = np.random.default_rng([seed, k, start]).standard_normal((stop - start, width), np.float32)
            means, mixing = bases[width]
            chunk[name] = (noise + strength * means[labels[start:stop]] + factors[start:stop] @ mixing
                           ).astype(np.float32)
        writer.write_chunk(start, chunk)


CHILD = ("import resource, sys\nfrom jaxprobe.cli import main\ncode = main(sys.argv[1:])\n"
         "print('peak_rss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
         "sys.exit(code)")


def run_probe(workdir: Path, extra: list[str], cache: str = "off") -> dict:
    """``jaxprobe probe`` in a fresh process: wall seconds (imports and compilation included) and its peak RSS;
    ``cache``: the persistent compilation cache's directory, or "off"."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"JAXPROBE_COMPILATION_CACHE": cache}
    start = time.perf_counter()
    completed = subprocess.run([sys.executable, "-c", CHILD, "probe", str(workdir), *extra], env=env,
                               capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if completed.returncode:
        raise RuntimeError(completed.stderr[-3000:])
    peak_kb = int(completed.stderr.rsplit("peak_rss_kb", 1)[1].split()[0])
    return {"seconds": round(seconds, 1), "peak_rss_gb": round(peak_kb / 2**20, 2)}


def fits_in_cell(store: FeatureStore, settings: ProbeSettings) -> dict[tuple[str, int], int]:
    """Fits a scikit-learn loop would make for the same work, per (kind, width): every lambda on every fold and
    the refit, plus the control task's refit at the selected lambda."""
    widths = pd.Series({site: spec["dim"] for site, spec in store.meta["sites"].items()})
    counts = {}
    for kind in settings.linear_kinds:
        for width, sites in widths.groupby(widths).groups.items():
            counts[(kind, int(width))] = len(sites) * (len(settings.lambdas(kind)) * (settings.folds + 1) + 1)
    return counts


def sklearn_seconds(store: FeatureStore, settings: ProbeSettings) -> dict:
    """scikit-learn pipeline seconds for the cell's fits, from SKLEARN_SAMPLES timed fits per kind x width."""
    index = store.index
    train = np.flatnonzero(index.split == "train")
    test = np.flatnonzero(index.split == "test")
    fold = train[: len(train) * (settings.folds - 1) // settings.folds]
    labels = index.label.to_numpy()
    total, per_fit = 0.0, {}
    for (kind, width), count in fits_in_cell(store, settings).items():
        sites = [s for s, spec in store.meta["sites"].items() if spec["dim"] == width]
        grid = settings.lambdas(kind)
        times = []
        for k in range(SKLEARN_SAMPLES):
            x = np.asarray(store.load(sites[k * len(sites) // SKLEARN_SAMPLES]), np.float32)
            lam = float(grid[k * len(grid) // SKLEARN_SAMPLES])
            for rows in (fold, train):
                started = time.perf_counter()
                sklearn_fit(kind, lam, x[rows], labels[rows], x[test])
                times.append(time.perf_counter() - started)
        # fold fits outnumber refits settings.folds : 1
        mean = (settings.folds * np.mean(times[0::2]) + np.mean(times[1::2])) / (settings.folds + 1)
        per_fit[f"{kind}_{width}"] = round(float(mean), 4)
        total += count * mean
    return {"sklearn_seconds_extrapolated": round(total, 1), "sklearn_seconds_per_fit": per_fit}


def run_cell(name: str, store_dir: Path) -> dict:
    workdir = store_dir / name
    if not (workdir / "features" / "meta.json").is_file():
        started = time.perf_counter()
        write_store(workdir / "features", CELLS[name])
        print(f"{name}: store written in {time.perf_counter() - started:.0f} s", flush=True)
    store = FeatureStore.open(workdir / "features")
    result = {"cell": name, "rows": CELLS[name]["rows"], "sites": len(store.sites),
              "load_average_before": round(os.getloadavg()[0], 2)}
    result["jaxprobe_probe"] = run_probe(workdir, [])  # cold: nothing compiled before
    if name == "busi":  # the same cell again with a warm compilation cache (what the next cell of a sweep sees)
        with tempfile.TemporaryDirectory() as cache:
            run_probe(workdir, [], cache)
            result["jaxprobe_probe_warm_cache"] = run_probe(workdir, [], cache)
    probes = pd.read_parquet(workdir / "probes.parquet")
    logistic = probes[probes.kind == "logistic"]
    result["logistic_certified_fraction"] = round(float(logistic.converged.mean()), 4)
    result["logistic_max_gap"] = float(logistic.gap.max())
    result["load_average_after"] = round(os.getloadavg()[0], 2)
    if name == "busi":
        result.update(sklearn_seconds(store, ProbeSettings()))
        result["speedup_vs_sklearn"] = round(result["sklearn_seconds_extrapolated"]
                                             / result["jaxprobe_probe"]["seconds"], 1)
    print(json.dumps(result), flush=True)
    return result


def write_markdown(report: dict, path: Path) -> None:
    """The cells as a table (what the README links to)."""
    lines = [f"Machine: {report['machine']}", "",
             "`jaxprobe probe WORKDIR` with the default config (ridge + logistic, 5 folds, control task, 999 "
             "permutations, 1000 bootstrap resamples) on 89 sites (32 x 1280 + 57 x 3584), a fresh process: imports "
             "and XLA compilation included ('warm cache': with the persistent compilation cache filled by an "
             "earlier run). scikit-learn: a StandardScaler + model pipeline's per-fit time on a sample of the same "
             "fits, extrapolated to all of them, in the same run. Load: the machine's 1-minute load average (2 "
             "cores, shared) before and after.", "",
             "| cell | N | wall s (cold) | wall s (warm cache) | peak RSS GB | sklearn s | speedup (cold) | "
             "logistic certified | max gap | load |", "|---|---|---|---|---|---|---|---|---|---|"]
    for cell in report["cells"]:
        warm = cell.get("jaxprobe_probe_warm_cache", {}).get("seconds", "-")
        speedup = f"{cell['speedup_vs_sklearn']}x" if "speedup_vs_sklearn" in cell else "-"
        lines.append(f"| {cell['cell']} | {cell['rows']} | {cell['jaxprobe_probe']['seconds']} | {warm} | "
                     f"{cell['jaxprobe_probe']['peak_rss_gb']} | {cell.get('sklearn_seconds_extrapolated', '-')} | "
                     f"{speedup} | {cell['logistic_certified_fraction']} | {cell['logistic_max_gap']:.2g} | "
                     f"[{cell['load_average_before']}, {cell['load_average_after']}] |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    parser.add_argument("--store-dir", type=Path, default=Path(tempfile.gettempdir()) / "jaxprobe_probe_cell",
                        help="where the stores are written (kept for reruns)")
    args = parser.parse_args()
    report = {"machine": machine.describe(), "cells": []}
    RESULTS.mkdir(exist_ok=True)
    if (RESULTS / "probe_cell.json").is_file():  # keep the cells not rerun
        kept = json.loads((RESULTS / "probe_cell.json").read_text()).get("cells", [])
        report["cells"] = [cell for cell in kept if cell["cell"] not in args.cells]
    for name in args.cells:
        report["cells"].append(run_cell(name, args.store_dir))
        report["cells"].sort(key=lambda cell: list(CELLS).index(cell["cell"]))
        (RESULTS / "probe_cell.json").write_text(json.dumps(report, indent=1))
        write_markdown(report, RESULTS / "probe_cell.md")


if __name__ == "__main__":
    main()
