"""MLP-probe throughput: the study's protocol in lockstep (jaxprobe) vs a sequential PyTorch loop.

Workload of one study cell on a BUSI-sized split: S sites x 5 CV folds x 1 seed MLPs (780 rows, so each train
fold has 624 rows and each held-out fold 156), D = 1280, hidden 256, 3 classes, batch 4. Every step of the
protocol costs the same, so both sides are timed over ``--epochs`` epochs (default 1 of the protocol's 20) and
extrapolated to 20; PyTorch is timed on a few probes and its per-probe time extrapolated to the workload. Both
extrapolations are labelled in the results. Achieved GFLOP/s and GB/s of the jaxprobe run are set against the
machine's measured matmul peak and memory bandwidth (benchmarks/machine.py).

Bytes per probe step (the memory-bandwidth bound): AdamW reads and writes the parameters and both moments
(6 x 4 bytes per parameter) and the step reads its batch of 4 feature rows (4 x D x 4 bytes); gradients,
activations and dropout masks are left out, so the bound is optimistic. When a chunk of probes' state stays
in cache between steps, jaxprobe can run faster than this DRAM bound (fraction > 1).

Usage: ``python -m benchmarks.mlp_throughput [--quick] [--epochs E]``; writes results/mlp_throughput[_quick].json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import jax
import numpy as np
import torch

from benchmarks import machine
from jaxprobe.probes.mlp import MlpProtocol, fit_mlp_probes

RESULTS = Path(__file__).parent / "results"
FULL = {"sites": 100, "folds": 5, "rows": 780, "width": 1280, "classes": 3}
QUICK = {"sites": 4, "folds": 5, "rows": 780, "width": 1280, "classes": 3}
TORCH_PROBES = 3
TORCH_THREADS = 2


def planted_folds(sites: int, folds: int, rows: int, width: int, classes: int, seed: int = 0):
    """Site features with a class signal, cut into k-fold (train, held-out) probes stacked on one axis."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(rows) % classes).astype(np.int32)
    centres = rng.normal(size=(classes, width)).astype(np.float32) * 0.2
    features = rng.standard_normal((sites, rows, width), dtype=np.float32) + centres[labels]
    fold_of = np.arange(rows) % folds
    x_train = np.stack([features[:, fold_of != k] for k in range(folds)], 1).reshape(sites * folds, -1, width)
    x_eval = np.stack([features[:, fold_of == k] for k in range(folds)], 1).reshape(sites * folds, -1, width)
    y_train = np.tile(np.stack([labels[fold_of != k] for k in range(folds)]), (sites, 1))
    y_eval = np.tile(np.stack([labels[fold_of == k] for k in range(folds)]), (sites, 1))
    return x_train, y_train, x_eval, y_eval


def time_jaxprobe(x_train, y_train, x_eval, classes: int, protocol: MlpProtocol) -> tuple[float, np.ndarray]:
    """Seconds of one lockstep call after a compile run on the same shapes, and its eval probabilities."""
    mask = np.ones(y_train.shape, bool)
    keys = jax.random.split(jax.random.key(0), len(x_train))
    fit_mlp_probes(x_train, y_train, mask, x_eval, classes, keys, protocol)
    start = time.perf_counter()
    probs = fit_mlp_probes(x_train, y_train, mask, x_eval, classes, keys, protocol)
    return time.perf_counter() - start, probs


def torch_probe(x_train, y_train, x_eval, classes: int, protocol: MlpProtocol, seed: int) -> np.ndarray:
    """The protocol as a study author writes it in PyTorch: one probe, a DataLoader, AdamW, LambdaLR."""
    torch.manual_seed(seed)
    hidden = protocol.hidden_size
    model = torch.nn.Sequential(torch.nn.Linear(x_train.shape[1], hidden), torch.nn.ReLU(),
                                torch.nn.Dropout(protocol.dropout), torch.nn.Linear(hidden, classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=protocol.learning_rate, weight_decay=protocol.weight_decay)
    data = torch.utils.data.TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train).long())
    loader = torch.utils.data.DataLoader(data, batch_size=protocol.batch_size, shuffle=True)
    total = protocol.epochs * len(loader)
    warmup = math.ceil(protocol.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: s / max(1, warmup) if s < warmup else (
        0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, total - warmup))))))
    model.train()
    for _ in range(protocol.epochs):
        for xb, yb in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
            scheduler.step()
    model.eval()
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(x_eval)), -1).numpy()


def time_torch(x_train, y_train, x_eval, classes: int, protocol: MlpProtocol) -> float:
    """Mean seconds per probe over the first ``TORCH_PROBES`` probes, trained one after the other."""
    torch.set_num_threads(TORCH_THREADS)
    start = time.perf_counter()
    for p in range(TORCH_PROBES):
        torch_probe(x_train[p], y_train[p], x_eval[p], classes, protocol, seed=p)
    return (time.perf_counter() - start) / TORCH_PROBES


def per_step_cost(width: int, hidden: int, classes: int, batch: int) -> tuple[float, float]:
    """(FLOPs, bytes) of one probe step: forward + backward matmuls + AdamW; bytes as in the module docstring."""
    params = width * hidden + hidden + hidden * classes + classes
    matmul_flops = 3 * 2 * batch * (width * hidden + hidden * classes)  # forward, weight grads, hidden grads
    adamw_flops = 12 * params  # moments, bias correction, sqrt, divide, decay, update: about a dozen per weight
    return matmul_flops + adamw_flops, 6 * 4 * params + batch * width * 4


def run(report: dict, quick: bool = False, epochs: int = 1) -> dict:
    """Time the workload, add the ``mlp`` section (and machine peaks if missing) to ``report``, return it."""
    shape = QUICK if quick else FULL
    full_protocol = MlpProtocol()
    timed = dataclasses.replace(full_protocol, epochs=epochs)
    x_train, y_train, x_eval, y_eval = planted_folds(**shape)
    probes, rows = x_train.shape[0], x_train.shape[1]
    report.setdefault("machine", machine.describe())
    jax_seconds, probs = time_jaxprobe(x_train, y_train, x_eval, shape["classes"], timed)
    torch_seconds = time_torch(x_train, y_train, x_eval, shape["classes"], timed)
    steps = probes * epochs * math.ceil(rows / full_protocol.batch_size)
    flops, num_bytes = per_step_cost(shape["width"], full_protocol.hidden_size, shape["classes"],
                                     full_protocol.batch_size)
    scale = full_protocol.epochs / epochs
    bound_seconds = steps * num_bytes / (report["machine"]["memory_bandwidth_gbs"] * 1e9)
    report["mlp"] = {
        "workload": {**shape, "probes": probes, "train_rows": rows, "hidden": full_protocol.hidden_size,
                     "epochs_timed": epochs, "epochs_protocol": full_protocol.epochs},
        "jaxprobe_seconds_timed": round(jax_seconds, 3),
        "jaxprobe_seconds_protocol_extrapolated": round(jax_seconds * scale, 1),
        "jaxprobe_probes_per_s_protocol": round(probes / (jax_seconds * scale), 4),
        "torch_probes_timed": TORCH_PROBES, "torch_threads": TORCH_THREADS,
        "torch_seconds_per_probe_timed": round(torch_seconds, 3),
        "torch_seconds_workload_extrapolated": round(torch_seconds * probes * scale, 1),
        "torch_probes_per_s_protocol": round(1 / (torch_seconds * scale), 4),
        "speedup_vs_torch": round(torch_seconds * probes / jax_seconds, 2),
        "jaxprobe_us_per_probe_step": round(jax_seconds / steps * 1e6, 1),
        "achieved_gflops": round(steps * flops / jax_seconds / 1e9, 2),
        "achieved_gbs": round(steps * num_bytes / jax_seconds / 1e9, 2),
        "bytes_per_probe_step": num_bytes, "flops_per_probe_step": flops,
        "fraction_of_matmul_peak": round(steps * flops / jax_seconds / 1e9 / report["machine"]["matmul_peak_gflops"],
                                         4),
        "fraction_of_bandwidth_bound": round(bound_seconds / jax_seconds, 3),
        "eval_accuracy_timed_run": round(float((probs.argmax(-1) == y_eval).mean()), 3),
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 sites instead of 100 (a smoke run)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs timed (results extrapolated to 20)")
    args = parser.parse_args()
    report = run({}, quick=args.quick, epochs=args.epochs)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"mlp_throughput{'_quick' if args.quick else ''}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
