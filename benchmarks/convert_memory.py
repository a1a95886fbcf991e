"""Host peak RSS of converting a few-hundred-MB checkpoint, as a multiple of the checkpoint's size.

The loader reads one tensor at a time without memory-mapping, so converting should hold about one copy of the
model (the params tree) plus one tensor, not two copies. This writes a random Qwen2.5-VL-shaped float32
checkpoint, then converts it (``load_params`` into a params tree + orbax cache write) in a fresh subprocess and
reads that process's peak RSS (``ru_maxrss``). Both the raw peak and the peak above the process's RSS after
importing jax/flax/orbax (current RSS then: the interpreter and libraries, independent of the checkpoint) are
reported.

Usage: ``python benchmarks/convert_memory.py [--workdir DIR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import tempfile
import time
from pathlib import Path

from benchmarks import machine

RESULTS = Path(__file__).parent / "results"
MIB = 2**20
KIB = 1024  # ru_maxrss is in KiB on Linux
# Qwen2.5-VL layout scaled to ~340 MB of float32 (the tiny family config with larger sizes).
TEXT_SIZES = {
    "vocab_size": 16384,
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 3,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6},
}
VISION_SIZES = {"depth": 4, "hidden_size": 512, "intermediate_size": 1376, "num_heads": 8}
FAMILY = "qwen2_5_vl"
REPEATS = 3  # fresh processes; the worst one is reported (malloc behaviour varies from run to run)
# Qwen2.5-VL-7B's real sizes (config.json of Qwen/Qwen2.5-VL-7B-Instruct): ~8.3B parameters, 16.6 GB in bf16
SEVEN_B_TEXT = {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                "num_attention_heads": 28, "num_key_value_heads": 4,
                "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6}}
SEVEN_B_VISION = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "patch_size": 14,
                  "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31]}
SHARD_BYTES = 2 * 2**30


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB


def child(checkpoint: Path, cache_root: Path, dtype: str = "float32") -> None:
    """Runs in a fresh process: convert and print the measurements as one JSON line."""
    import jax
    import orbax.checkpoint  # noqa: F401  (libraries are imported before the baseline: not counted as growth)
    import psutil
    import transformers  # noqa: F401  (config translation uses its config classes)

    with contextlib.suppress(ImportError):  # transformers' config classes import torch when it is installed
        import torch  # noqa: F401  (185 MiB of library, not conversion)

    from jaxprobe.families.loading import converter_for
    from jaxprobe.weights.cache import load_or_convert
    from jaxprobe.weights.loader import load_params
    from jaxprobe.weights.reader import read_config_json

    jax.numpy.zeros(1).block_until_ready()
    baseline = psutil.Process().memory_info().rss  # current, not peak: transient import peaks are not a baseline
    converter = converter_for(read_config_json(checkpoint))
    label = "qwen2_5_vl keymap"
    start = time.perf_counter()
    result = load_or_convert(checkpoint, cache_root, dtype,
                             lambda: load_params(checkpoint, converter.keymap, converter.abstract_params, dtype),
                             converter.version)
    jax.block_until_ready(result.params)
    seconds = time.perf_counter() - start
    print(json.dumps({"baseline_rss": baseline, "peak_rss": peak_rss_bytes(), "seconds": seconds, "keymap": label,
                      "cache_hit": result.hit}))


def run_child(checkpoint: Path, cache_root: Path, dtype: str = "float32") -> dict:
    """One conversion in a fresh process (so its peak RSS is the conversion's alone)."""
    return machine.run_child("benchmarks.convert_memory", checkpoint, cache_root, dtype)


def measure(workdir: Path, text_layers: int) -> dict:
    from jaxprobe.families.qwen_vl.tiny import write_tiny_checkpoint
    from jaxprobe.weights.reader import SINGLE_FILE

    checkpoint = write_tiny_checkpoint(
        FAMILY, workdir / "ckpt", seed=0, text={**TEXT_SIZES, "num_hidden_layers": text_layers}, vision=VISION_SIZES
    )
    size = (checkpoint / SINGLE_FILE).stat().st_size
    runs = [run_child(checkpoint, workdir / f"cache{i}") for i in range(REPEATS)]
    child_result = max(runs, key=lambda r: r["peak_rss"] - r["baseline_rss"])
    return {
        "family": FAMILY,
        "keymap": child_result["keymap"],
        "checkpoint_mib": round(size / MIB, 1),
        "baseline_rss_mib": round(child_result["baseline_rss"] / MIB, 1),
        "peak_rss_mib": round(child_result["peak_rss"] / MIB, 1),
        "peak_over_checkpoint": round(child_result["peak_rss"] / size, 3),
        "growth_over_checkpoint": round((child_result["peak_rss"] - child_result["baseline_rss"]) / size, 3),
        "convert_seconds": round(child_result["seconds"], 2),
        "growth_over_checkpoint_all_runs": [round((r["peak_rss"] - r["baseline_rss"]) / size, 3) for r in runs],
    }


def write_sharded_bf16(out: Path, text: dict, vision: dict) -> int:
    """A random bf16 checkpoint written shard by shard (never the whole model in memory), as the hub ships 7B
    models; returns its size in bytes."""
    import json

    import ml_dtypes
    import numpy as np
    from safetensors.numpy import save_file

    from jaxprobe.families.qwen_vl.tiny import SHAPES, tiny_config, write_tiny_checkpoint

    write_tiny_checkpoint(FAMILY, out, seed=0, text={**TEXT_SIZES, "num_hidden_layers": 1}, vision=VISION_SIZES)
    (out / "model.safetensors").unlink()  # keep the tokenizer and processor files; replace the weights
    config = tiny_config(FAMILY, text, vision)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    rng = np.random.default_rng(0)
    shard, shard_bytes, weight_map, files = {}, 0, {}, []

    def flush():
        nonlocal shard, shard_bytes
        name = f"model-{len(files) + 1:05d}.safetensors"
        save_file(shard, out / name, metadata={"format": "pt"})
        files.append(name)
        weight_map.update(dict.fromkeys(shard, name))
        shard, shard_bytes = {}, 0

    for name, shape in sorted(SHAPES[FAMILY](config).items()):
        tensor = (rng.standard_normal(shape, np.float32) * 0.02).astype(ml_dtypes.bfloat16)
        shard[name] = tensor
        shard_bytes += tensor.nbytes
        if shard_bytes >= SHARD_BYTES:
            flush()
    if shard:
        flush()
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return sum((out / name).stat().st_size for name in files)


def measure_7b(workdir: Path) -> dict:
    """Convert a real-size checkpoint, then load it again from the cache it wrote (a fresh process each)."""
    size = write_sharded_bf16(workdir / "ckpt7b", SEVEN_B_TEXT, SEVEN_B_VISION)
    run = run_child(workdir / "ckpt7b", workdir / "cache7b", "bfloat16")
    restore = run_child(workdir / "ckpt7b", workdir / "cache7b", "bfloat16")
    assert restore["cache_hit"] and not run["cache_hit"]
    return {"family": FAMILY, "shape": "Qwen2.5-VL-7B (8.3B parameters)", "keymap": run["keymap"],
            "checkpoint_mib": round(size / MIB, 1), "baseline_rss_mib": round(run["baseline_rss"] / MIB, 1),
            "peak_rss_mib": round(run["peak_rss"] / MIB, 1),
            "peak_over_checkpoint": round(run["peak_rss"] / size, 3),
            "growth_over_checkpoint": round((run["peak_rss"] - run["baseline_rss"]) / size, 3),
            "convert_seconds": round(run["seconds"], 2),
            "cache_restore_growth_over_checkpoint": round((restore["peak_rss"] - restore["baseline_rss"]) / size, 3),
            "cache_restore_seconds": round(restore["seconds"], 2)}


def markdown(result: dict) -> str:
    return (
        f"| convert memory ({result.get('shape', result['keymap'])}) | checkpoint {result['checkpoint_mib']} MiB "
        f"| peak RSS "
        f"{result['peak_rss_mib']} MiB = {result['peak_over_checkpoint']}x | growth above import baseline "
        f"({result['baseline_rss_mib']} MiB) = {result['growth_over_checkpoint']}x | {result['convert_seconds']} s |"
        + (f" cache restore: growth {result['cache_restore_growth_over_checkpoint']}x, "
           f"{result['cache_restore_seconds']} s |" if "cache_restore_seconds" in result else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the checkpoint (default: tmp)")
    parser.add_argument(
        "--text-layers", type=int, default=TEXT_SIZES["num_hidden_layers"], help="LLM layers (~45 MiB each)"
    )
    parser.add_argument("--child", nargs=3, metavar=("CHECKPOINT", "CACHE", "DTYPE"), help=argparse.SUPPRESS)
    parser.add_argument("--seven-b", action="store_true", help="also a real-size Qwen2.5-VL-7B bf16 checkpoint "
                        "(writes ~33 GB to --workdir: checkpoint + cache; needs ~17 GB of RAM)")
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), args.child[2])
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        results = [measure(Path(tmp), args.text_layers)]
        if args.seven_b:
            results.append(measure_7b(Path(tmp)))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "convert_memory.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "convert_memory.md").write_text("\n".join(markdown(result) for result in results) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
