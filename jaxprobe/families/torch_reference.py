"""What every family's PyTorch parity reference does the same way: run transformers' model with a forward hook on
each vision block and decoder layer, and decode greedily. torch is imported lazily (parity and tests only)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxprobe.models.layers import layer_name


def hooked_forward(vision_blocks: Sequence[Any], llm_layers: Sequence[Any],
                   forward: Callable[[], Any]) -> tuple[dict[str, np.ndarray], Any]:
    """``forward()`` under ``no_grad`` with every block's and layer's output captured; returns those outputs as
    float32 arrays keyed by site name (``vision.layer_NN``, ``llm.layer_NN``) and what ``forward`` returned."""
    import torch

    captured: dict[str, Any] = {}

    def hook_all(modules: Sequence[Any], prefix: str) -> list[Any]:
        return [module.register_forward_hook(lambda m, a, out, i=i: captured.__setitem__(
            f"{prefix}.{layer_name(i, len(modules))}", out)) for i, module in enumerate(modules)]

    hooks = hook_all(vision_blocks, "vision") + hook_all(llm_layers, "llm")
    try:
        with torch.no_grad():
            result = forward()
    finally:
        for hook in hooks:
            hook.remove()
    sites = {key: (value[0] if isinstance(value, tuple) else value).float().numpy()
             for key, value in captured.items()}
    return sites, result


def greedy_new_tokens(model: Any, tensors: dict[str, Any], max_new_tokens: int) -> np.ndarray:
    """transformers' greedy ``generate`` without an EOS stop (so lengths match ours), new tokens only."""
    import torch

    with torch.no_grad():
        tokens = model.generate(**tensors, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=None,
                                pad_token_id=0)
    return tokens[:, tensors["input_ids"].shape[1]:].numpy()
