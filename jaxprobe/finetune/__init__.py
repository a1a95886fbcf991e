"""Fine-tuning: LoRA SFT of the whole MLLM and the vision-tower cross-entropy baseline, with adapter checkpoints.

The study probes every model twice, off the shelf and after dataset-specific LoRA fine-tuning, and compares the
vision tower with a traditionally fine-tuned one. Modules: ``lora`` (the adapter tree, built functionally beside
the params), ``settings`` (the config's ``finetune`` section), ``examples`` (prompts and answer targets exactly as
extraction builds them), ``loop`` (a seeded, resumable training loop with orbax checkpoints and early stopping),
``sft`` and ``vision`` (the two tasks), ``adapter`` (saving, loading and merging adapters), ``peft`` (export for
PyTorch) and ``stage`` (``jaxprobe finetune`` and the before -> fine-tune -> after run).
"""
