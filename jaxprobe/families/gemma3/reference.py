"""transformers' PyTorch Gemma 3 as the parity reference (imports torch: used lazily)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jaxprobe.families.base import ModelInputs, require_torch
from jaxprobe.families.torch_reference import greedy_new_tokens, hooked_forward


def torch_inputs(inputs: ModelInputs, positions: bool = True) -> dict[str, Any]:
    """What transformers' forward takes for our inputs: ``token_type_ids`` (1 on image tokens) switch on the
    bidirectional image attention; ``position_ids`` are ours (generate derives them from the mask itself)."""
    import torch

    arrays = {"input_ids": np.asarray(inputs.input_ids, np.int64),
              "attention_mask": np.asarray(inputs.attention_mask, np.int64),
              "pixel_values": np.asarray(inputs.pixels, np.float32),
              "token_type_ids": np.asarray(inputs.image_mask, np.int64)}
    if positions:
        arrays["position_ids"] = np.asarray(inputs.positions, np.int64)[:, 0]
    return {key: torch.from_numpy(value) for key, value in arrays.items()}


class Gemma3Reference:
    def load(self, checkpoint_dir: Path, dtype: str = "float32") -> Any:
        require_torch()
        from transformers import Gemma3ForConditionalGeneration

        return Gemma3ForConditionalGeneration.from_pretrained(checkpoint_dir, dtype=dtype).eval()

    def run(self, model: Any, inputs: ModelInputs) -> dict[str, np.ndarray]:
        """Every SigLIP block's output, the projector's output, every decoder layer's output, and the logits."""

        tensors = torch_inputs(inputs)
        out, (logits, projected) = hooked_forward(
            model.model.vision_tower.encoder.layers, model.model.language_model.layers,
            lambda: (model(**tensors).logits, model.model.get_image_features(tensors["pixel_values"]).pooler_output))
        out["connector.output"] = projected.float().numpy()
        out["logits"] = logits.float().numpy()
        return out

    def generate(self, model: Any, inputs: ModelInputs, max_new_tokens: int) -> np.ndarray:
        return greedy_new_tokens(model, torch_inputs(inputs, positions=False), max_new_tokens)
