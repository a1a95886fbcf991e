"""Extraction throughput and peak memory: jaxprobe vs transformers' PyTorch model + pooling afterwards.

Same random ~100M-parameter Qwen2.5-VL-shaped checkpoint, same images, same prompt. jaxprobe runs its jitted
forward with every site pooled on the device; the baseline runs ``model(**inputs, output_hidden_states=True)``
and pools the returned hidden states the same way (image-token mean and last token per LLM layer). Each
configuration runs in a fresh process so peak RSS (ru_maxrss) is its own; jaxprobe is also run with 4 sites to
show that memory does not grow with the number of captured sites. Results: results/extract_throughput.json/.md.
Usage: ``python -m benchmarks.extract_throughput [--quick]``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from benchmarks.machine import benchmark_args, peak_rss_mib, run_kinds_on_tiny_checkpoint

RESULTS = Path(__file__).parent / "results"
TEXT = {"vocab_size": 16384, "hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12,
        "num_attention_heads": 12, "num_key_value_heads": 4,
        "rope_parameters": {"rope_type": "default", "mrope_section": [16, 8, 8], "rope_theta": 1e6}}
VISION = {"depth": 12, "hidden_size": 512, "intermediate_size": 1376, "num_heads": 8, "window_size": 64,
          "fullatt_block_indexes": [3, 7, 11]}
IMAGE_SIZE, BATCH, BATCHES, QUICK_BATCHES = 224, 4, 8, 2
QUESTION = "Which of the following best describes this medical image?\n{options}\nAnswer with the option's letter."
FOUR_SITES = ["vision.layer_00", "connector.output", "llm.layer_00.image_mean", "llm.layer_11.last_token"]


def _batches(checkpoint: Path, count: int):
    from jaxprobe.data.synthetic import SyntheticSpec, render_image
    from jaxprobe.families.registry import family_of

    processor = family_of(checkpoint).processor(checkpoint)
    prompt = processor.prompt(["normal", "benign", "malignant"], QUESTION)
    spec = SyntheticSpec(image_size=IMAGE_SIZE)
    batches = [processor.encode(prompt, [render_image(spec, b * BATCH + i, i, i % 3) for i in range(BATCH)])
               for b in range(count + 1)]  # the first batch warms up (compiles) and is not timed
    return prompt, batches


def run_jaxprobe(checkpoint: Path, count: int, sites: list[str]) -> dict:
    from jaxprobe.capture.forward import PooledForward, sown_shapes
    from jaxprobe.capture.sites import select_sites, sites_for
    from jaxprobe.families.loading import load_model

    prompt, batches = _batches(checkpoint, count)
    loaded = load_model(checkpoint, cache_dir=False)
    chosen = select_sites(sites_for(sown_shapes(loaded.family, loaded.config)), sites)
    forward = PooledForward(loaded, chosen, answer=True, mesh=None)
    forward(batches[0], prompt.option_token_ids)
    start = time.perf_counter()
    for batch in batches[1:]:
        forward(batch, prompt.option_token_ids)
    return {"seconds": time.perf_counter() - start, "sites": len(chosen)}


def run_torch(checkpoint: Path, count: int) -> dict:
    import numpy as np
    import torch
    from transformers import AutoModelForImageTextToText

    from jaxprobe.families.qwen_vl.reference import torch_inputs

    torch.set_num_threads(2)
    _, batches = _batches(checkpoint, count)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype="float32").eval()

    def one(batch):
        with torch.no_grad():
            out = model(**torch_inputs(batch), output_hidden_states=True)
        mask = torch.from_numpy(np.asarray(batch.image_mask)).float()[..., None]
        rows = torch.arange(len(mask))
        last = torch.from_numpy(np.asarray(batch.last_index)).long()
        return [((h * mask).sum(1) / mask.sum(1), h[rows, last]) for h in out.hidden_states[1:]]

    one(batches[0])
    start = time.perf_counter()
    for batch in batches[1:]:
        np.asarray(one(batch)[0][0])
    return {"seconds": time.perf_counter() - start, "sites": "all LLM layers (vision pooled separately: not counted)"}


def child(kind: str, checkpoint: Path, count: int) -> None:
    result = run_torch(checkpoint, count) if kind == "torch" else run_jaxprobe(
        checkpoint, count, FOUR_SITES if kind == "jaxprobe_4_sites" else ["*"])
    result["peak_rss_mib"] = peak_rss_mib()
    result["images_per_s"] = round(count * BATCH / result["seconds"], 2)
    print(json.dumps(result))


def main() -> None:
    args = benchmark_args(__doc__)
    if args.child:
        child(args.child[0], Path(args.child[1]), int(args.child[2]))
        return
    count = QUICK_BATCHES if args.quick else BATCHES
    results = run_kinds_on_tiny_checkpoint("benchmarks.extract_throughput",
                                           ("jaxprobe_all_sites", "jaxprobe_4_sites", "torch"), count, TEXT, VISION)
    results["speedup_images_per_s"] = round(results["jaxprobe_all_sites"]["images_per_s"]
                                            / results["torch"]["images_per_s"], 2)
    results["workload"] = {"text": TEXT, "vision": VISION, "image_size": IMAGE_SIZE, "batch": BATCH,
                           "timed_batches": count}
    RESULTS.mkdir(exist_ok=True)
    name = "extract_throughput_quick" if args.quick else "extract_throughput"
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1))
    lines = ["| run | images/s | peak RSS (MiB) |", "|---|---|---|"]
    lines += [f"| {k} | {results[k]['images_per_s']} | {results[k]['peak_rss_mib']} |"
              for k in ("jaxprobe_all_sites", "jaxprobe_4_sites", "torch")]
    lines.append(f"\nspeedup (jaxprobe, all sites, vs PyTorch + pooling): {results['speedup_images_per_s']}x")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
