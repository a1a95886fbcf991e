"""transformers' PyTorch Qwen2-VL / Qwen2.5-VL as the parity reference (imports torch: used lazily)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jaxprobe.families.base import ModelInputs, require_torch
from jaxprobe.families.torch_reference import greedy_new_tokens, hooked_forward


def torch_inputs(inputs: ModelInputs) -> dict[str, Any]:
    """What transformers' forward takes for our inputs: packed patches, grids, and ``mm_token_type_ids``."""
    import torch

    pixels = np.asarray(inputs.pixels, np.float32)
    arrays = {"input_ids": np.asarray(inputs.input_ids, np.int64),
              "attention_mask": np.asarray(inputs.attention_mask, np.int64),
              "pixel_values": pixels.reshape(-1, pixels.shape[-1]),
              "image_grid_thw": np.tile(np.asarray(inputs.image_grid, np.int64), (inputs.batch_size, 1)),
              "mm_token_type_ids": np.asarray(inputs.image_mask, np.int64)}
    return {key: torch.from_numpy(value) for key, value in arrays.items()}


class QwenVLReference:
    def load(self, checkpoint_dir: Path, dtype: str = "float32") -> Any:
        require_torch()
        from transformers import AutoModelForImageTextToText

        return AutoModelForImageTextToText.from_pretrained(checkpoint_dir, dtype=dtype).eval()

    def run(self, model: Any, inputs: ModelInputs) -> dict[str, np.ndarray]:
        """Every vision block's output, the merger output, every decoder layer's output, and the logits."""
        import torch

        tensors = torch_inputs(inputs)
        sites, (logits, merged) = hooked_forward(model.model.visual.blocks, model.model.language_model.layers, lambda: (
            model(**tensors).logits,
            model.model.get_image_features(tensors["pixel_values"], tensors["image_grid_thw"]).pooler_output))
        out = {key: value.reshape(inputs.batch_size, -1, value.shape[-1]) for key, value in sites.items()}
        out["connector.output"] = torch.stack(list(merged)).float().numpy()
        out["logits"] = logits.float().numpy()
        return out

    def generate(self, model: Any, inputs: ModelInputs, max_new_tokens: int) -> np.ndarray:
        return greedy_new_tokens(model, torch_inputs(inputs), max_new_tokens)
