"""LoRA SFT step time and peak memory: jaxprobe's training step vs a PyTorch + peft loop on the same model.

A random small-width Qwen2.5-VL-shaped checkpoint (~30M parameters), the same batch of images with the
classification prompt and a one-letter answer + end of turn, LoRA with the config's defaults (configs/demo.py:
rank 8, alpha 16, dropout 0.05 on the LLM's q/k/v/o/gate/up/down), AdamW, loss on the answer tokens only, one
optimizer step per batch. jaxprobe runs ``finetune.loop``'s jitted step (gradients of the adapter only, logits at
the answer positions only); the baseline is transformers' model wrapped by ``peft.get_peft_model``, labels -100
outside the answer, ``torch.optim.AdamW`` at the peak learning rate (jaxprobe's warmup + cosine schedule costs
nothing measurable), the same gradient clipping, 2 torch threads. Both start from the same loss (a check that the
two sides train the same thing). Each side runs in a fresh process so its peak RSS
(ru_maxrss) is its own; the first steps (jit compilation / torch warm-up) are not timed.
Results: results/finetune_step.json/.md. Usage: ``python -m benchmarks.finetune_step [--quick]``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from benchmarks.machine import benchmark_args, peak_rss_mib, run_kinds_on_tiny_checkpoint

RESULTS = Path(__file__).parent / "results"
TEXT = {"vocab_size": 16384, "hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 6,
        "num_attention_heads": 8, "num_key_value_heads": 2,
        "rope_parameters": {"rope_type": "default", "mrope_section": [16, 8, 8], "rope_theta": 1e6}}
VISION = {"depth": 4, "hidden_size": 256, "intermediate_size": 688, "num_heads": 4, "window_size": 64,
          "fullatt_block_indexes": [3]}
IMAGE_SIZE, BATCH, STEPS, QUICK_STEPS, WARMUP = 112, 4, 10, 4, 2
CLASSES = ["normal", "benign", "malignant"]
QUESTION = "Which of the following best describes this medical image?\n{options}\nAnswer with the option's letter."
TORCH_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def _settings():
    from jaxprobe.config import load_config
    from jaxprobe.finetune.settings import FinetuneSettings

    config = load_config("demo", ["finetune.train.grad_accum=1", f"finetune.train.batch_size={BATCH}"])
    return FinetuneSettings.from_config(config.finetune)


def _sft_batches(checkpoint: Path, count: int):
    """(processor, answer targets, numpy SFT batches): the same prompts and answers on both sides."""
    from jaxprobe.capture.generate import eos_token_ids
    from jaxprobe.data.synthetic import SyntheticSpec, render_image
    from jaxprobe.families.registry import family_of
    from jaxprobe.finetune.examples import answer_targets, sft_batch

    processor = family_of(checkpoint).processor(checkpoint)
    prompt = processor.prompt(CLASSES, QUESTION)
    spec = SyntheticSpec(image_size=IMAGE_SIZE)
    images = [[render_image(spec, b * BATCH + i, i, i % 3) for i in range(BATCH)] for b in range(count)]
    targets = answer_targets(processor, prompt, CLASSES, "letter", eos_token_ids(checkpoint), images[0][0])
    labels = [[(b + i) % 3 for i in range(BATCH)] for b in range(count)]
    return [sft_batch(processor, targets, images[b], labels[b], [1.0] * BATCH) for b in range(count)]


def run_jaxprobe(checkpoint: Path, steps: int) -> dict:
    import jax
    import jax.numpy as jnp

    from jaxprobe.families.loading import load_model
    from jaxprobe.finetune import loop
    from jaxprobe.finetune.lora import init_lora, split_lora
    from jaxprobe.finetune.sft import SFTTask
    from jaxprobe.models.config import RunPlan
    from jaxprobe.models.vlm import VisionLanguageModel
    from jaxprobe.parallel import make_mesh

    settings = _settings()
    mesh = make_mesh(None, 1)
    batches = [loop.place(mesh, batch) for batch in _sft_batches(checkpoint, steps + WARMUP)]
    loaded = load_model(checkpoint, mesh=mesh, cache_dir=False)
    module = VisionLanguageModel(loaded.config, RunPlan.full(loaded.config), jnp.dtype(loaded.dtype))
    trainable, constants = split_lora(init_lora(jax.random.key(0), loaded.params, settings.lora))
    task = SFTTask(module, None, None, None, mesh, BATCH, dropout=True)
    frozen = {"params": loaded.params, "constants": constants}
    schedule, total = settings.schedule, steps + WARMUP
    opt_state = jax.jit(loop.optimizer(schedule, total).init)(trainable)
    losses, start = [], 0.0
    for number, batch in enumerate(batches):
        if number == WARMUP:
            start = time.perf_counter()
        trainable, opt_state, loss = loop._update(trainable, opt_state, frozen, batch, jax.random.key(number), task,
                                                  schedule, total)
        losses.append(float(loss))  # waits for the step
    return {"seconds": time.perf_counter() - start, "losses": losses}


def _torch_labels(batch):
    """Labels [B, T]: the answer's tokens where they are, -100 elsewhere (transformers shifts them itself)."""
    import numpy as np

    labels = np.full(np.asarray(batch.inputs.input_ids).shape, -100, np.int64)
    for row in range(labels.shape[0]):
        for index, token, real in zip(batch.target_index[row], batch.target_ids[row], batch.target_mask[row],
                                      strict=True):
            if real:
                labels[row, index + 1] = token
    return labels


def run_torch(checkpoint: Path, steps: int) -> dict:
    import peft
    import torch
    from transformers import AutoModelForImageTextToText

    from jaxprobe.families.qwen_vl.reference import torch_inputs

    torch.set_num_threads(2)
    settings = _settings()
    batches = [(torch_inputs(batch.inputs), torch.from_numpy(_torch_labels(batch)))
               for batch in _sft_batches(checkpoint, steps + WARMUP)]
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype="float32")
    lora = settings.lora
    model = peft.get_peft_model(model, peft.LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                       target_modules=TORCH_TARGETS))
    model.train()
    schedule = settings.schedule
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=schedule.learning_rate,
                                  weight_decay=schedule.weight_decay)
    losses, start = [], 0.0
    for number, (inputs, labels) in enumerate(batches):
        if number == WARMUP:
            start = time.perf_counter()
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], schedule.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    return {"seconds": time.perf_counter() - start, "losses": losses}


def child(kind: str, checkpoint: Path, steps: int) -> None:
    result = (run_torch if kind == "torch_peft" else run_jaxprobe)(checkpoint, steps)
    result["peak_rss_mib"] = peak_rss_mib()
    result["ms_per_step"] = round(1000 * result["seconds"] / steps, 1)
    print(json.dumps(result))


def main() -> None:
    args = benchmark_args(__doc__)
    if args.child:
        child(args.child[0], Path(args.child[1]), int(args.child[2]))
        return
    steps = QUICK_STEPS if args.quick else STEPS
    results = run_kinds_on_tiny_checkpoint("benchmarks.finetune_step", ("jaxprobe", "torch_peft"), steps, TEXT, VISION)
    results["speedup_step_time"] = round(results["torch_peft"]["ms_per_step"] / results["jaxprobe"]["ms_per_step"], 2)
    results["peak_rss_ratio"] = round(results["jaxprobe"]["peak_rss_mib"] / results["torch_peft"]["peak_rss_mib"], 2)
    results["workload"] = {"text": TEXT, "vision": VISION, "image_size": IMAGE_SIZE, "batch": BATCH,
                           "timed_steps": steps, "lora": "rank 8, alpha 16, dropout 0.05, LLM q/k/v/o/gate/up/down"}
    RESULTS.mkdir(exist_ok=True)
    name = "finetune_step_quick" if args.quick else "finetune_step"
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1))
    lines = ["| training loop | ms per step | peak RSS (MiB) | first -> last loss |", "|---|---|---|---|"]
    lines += [f"| {label} | {results[k]['ms_per_step']} | {results[k]['peak_rss_mib']} | "
              f"{results[k]['losses'][0]:.3f} -> {results[k]['losses'][-1]:.3f} |"
              for k, label in (("jaxprobe", "jaxprobe LoRA SFT (jitted step)"),
                               ("torch_peft", "PyTorch + peft (2 threads)"))]
    lines.append(f"\nstep-time speedup (PyTorch + peft / jaxprobe): {results['speedup_step_time']}x; peak RSS "
                 f"ratio (jaxprobe / PyTorch + peft): {results['peak_rss_ratio']}x")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
