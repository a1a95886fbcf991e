"""Generated-answer throughput: jaxprobe's cached decoding vs transformers' ``generate`` on the same model.

A random ~100M-parameter Qwen2.5-VL-shaped checkpoint (the extraction benchmark's), a batch of images with the
classification prompt, greedy decoding of a fixed number of new tokens (no EOS stop, so both sides decode the same
count). jaxprobe runs prefill + a ``lax.while_loop`` of one-token steps in one jitted call; the baseline is
``model.generate(do_sample=False)`` with 2 torch threads. Each side runs in a fresh process; the first call (jit
compilation / torch warm-up) is not timed. Results: results/decode_throughput.json/.md.
Usage: ``python -m benchmarks.decode_throughput [--quick]``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from benchmarks.extract_throughput import BATCH, TEXT, VISION, _batches
from benchmarks.machine import benchmark_args, run_kinds_on_tiny_checkpoint

RESULTS = Path(__file__).parent / "results"
NEW_TOKENS, REPEATS, QUICK_REPEATS = 32, 4, 2


def run_jaxprobe(checkpoint: Path, repeats: int) -> float:
    from jaxprobe.capture.generate import Sampling, generate
    from jaxprobe.families.loading import load_model

    _, batches = _batches(checkpoint, repeats)
    loaded = load_model(checkpoint, cache_dir=False)
    sampling = Sampling(max_new_tokens=NEW_TOKENS)
    generate(loaded, batches[0], sampling, eos=())
    start = time.perf_counter()
    for batch in batches[1:]:
        generate(loaded, batch, sampling, eos=())
    return time.perf_counter() - start


def run_torch(checkpoint: Path, repeats: int) -> float:
    import torch

    from jaxprobe.families.qwen_vl.reference import QwenVLReference

    torch.set_num_threads(2)
    _, batches = _batches(checkpoint, repeats)
    reference = QwenVLReference()
    model = reference.load(checkpoint)
    reference.generate(model, batches[0], NEW_TOKENS)
    start = time.perf_counter()
    for batch in batches[1:]:
        reference.generate(model, batch, NEW_TOKENS)
    return time.perf_counter() - start


def main() -> None:
    args = benchmark_args(__doc__)
    if args.child:
        kind, checkpoint, repeats = args.child
        seconds = (run_torch if kind == "torch" else run_jaxprobe)(Path(checkpoint), int(repeats))
        print(json.dumps({"seconds": seconds, "tokens_per_s": round(int(repeats) * BATCH * NEW_TOKENS / seconds, 1)}))
        return
    repeats = QUICK_REPEATS if args.quick else REPEATS
    results = run_kinds_on_tiny_checkpoint("benchmarks.decode_throughput", ("jaxprobe", "torch"), repeats, TEXT, VISION)
    results["speedup"] = round(results["jaxprobe"]["tokens_per_s"] / results["torch"]["tokens_per_s"], 2)
    results["workload"] = {"text": TEXT, "vision": VISION, "batch": BATCH, "new_tokens": NEW_TOKENS,
                           "timed_batches": repeats}
    name = "decode_throughput_quick" if args.quick else "decode_throughput"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1))
    table = ("| decoder | new tokens/s |\n|---|---|\n"
             f"| jaxprobe (prefill + cached while_loop) | {results['jaxprobe']['tokens_per_s']} |\n"
             f"| transformers generate (2 threads) | {results['torch']['tokens_per_s']} |\n\n"
             f"speedup: {results['speedup']}x (goal >= 1x)\n")
    (RESULTS / f"{name}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
