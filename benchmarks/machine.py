"""What this machine can do at best: measured matmul peak (GFLOP/s) and memory bandwidth (GB/s).

Benchmarks report achieved rates as fractions of these, measured in the same process as the workload.
"""

from __future__ import annotations

import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

MATMUL_SIZE = 2048
BANDWIDTH_BYTES = 512 * 2**20
REPEATS = 5


def best_time(fn, *args) -> float:
    """Fastest of ``REPEATS`` runs after one warm-up (compilation) run."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak_gflops(size: int = MATMUL_SIZE) -> float:
    a = jnp.asarray(np.random.default_rng(0).normal(size=(size, size)), jnp.float32)
    seconds = best_time(jax.jit(lambda x: x @ x), a)
    return 2 * size**3 / seconds / 1e9


def memory_bandwidth_gbs(num_bytes: int = BANDWIDTH_BYTES) -> float:
    """Streaming read of a large float32 array (a sum: no output buffer to allocate and page in)."""
    a = jnp.ones(num_bytes // 4, jnp.float32)
    seconds = best_time(jax.jit(jnp.sum), a)
    return num_bytes / seconds / 1e9


def describe() -> dict:
    return {"machine": platform.machine(), "processor": platform.processor(), "devices": str(jax.devices()),
            "jax": jax.__version__, "matmul_peak_gflops": round(matmul_peak_gflops(), 1),
            "memory_bandwidth_gbs": round(memory_bandwidth_gbs(), 1)}


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (``ru_maxrss`` is in KiB on Linux)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_child(module: str, *args: object) -> dict:
    """``python -m <module> --child ARGS`` in a fresh process (so its peak RSS and compilation are its own); the
    child prints its result as the last line of stdout, in JSON."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", module, "--child", *map(str, args)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def benchmark_args(doc: str):
    """``--quick`` for a smoke run, and the hidden ``--child KIND CHECKPOINT COUNT`` of one measured process."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    return parser.parse_args()


def run_kinds_on_tiny_checkpoint(module: str, kinds: tuple[str, ...], count: int, text: dict, vision: dict) -> dict:
    """Each ``kind`` of ``module``'s workload in its own fresh process, all on one random Qwen2.5-VL-shaped
    checkpoint of the given sizes (written to a temporary directory); returns {kind: the child's result}."""
    import tempfile
    from pathlib import Path

    from jaxprobe.families.qwen_vl.tiny import write_tiny_checkpoint

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = write_tiny_checkpoint("qwen2_5_vl", Path(tmp) / "ckpt", seed=0, text=text, vision=vision)
        for kind in kinds:
            results[kind] = run_child(module, kind, checkpoint, count)
            print(kind, {key: value for key, value in results[kind].items() if key != "losses"}, flush=True)
    return results
