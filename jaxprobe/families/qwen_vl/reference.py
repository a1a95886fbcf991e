"""transformers' PyTorch Qwen2-VL / Qwen2.5-VL as the parity reference (imports torch: used lazily)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jaxprobe.families.base import ModelInputs, require_torch
from jaxprobe.models.layers import layer_name


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

        captured: dict[str, Any] = {}
        vision_blocks, layers = model.model.visual.blocks, model.model.language_model.layers
        hooks = [block.register_forward_hook(lambda m, a, out, i=i: captured.__setitem__(
            f"vision.{layer_name(i, len(vision_blocks))}", out)) for i, block in enumerate(vision_blocks)]
        hooks += [layer.register_forward_hook(lambda m, a, out, i=i: captured.__setitem__(
            f"llm.{layer_name(i, len(layers))}", out)) for i, layer in enumerate(layers)]
        tensors = torch_inputs(inputs)
        try:
            with torch.no_grad():
                logits = model(**tensors).logits
                merged = model.model.get_image_features(tensors["pixel_values"],
                                                        tensors["image_grid_thw"]).pooler_output
        finally:
            for hook in hooks:
                hook.remove()
        batch = inputs.batch_size
        out = {}
        for key, value in captured.items():
            value = (value[0] if isinstance(value, tuple) else value).float().numpy()
            out[key] = value.reshape(batch, -1, value.shape[-1])
        out["connector.output"] = torch.stack(list(merged)).float().numpy()
        out["logits"] = logits.float().numpy()
        return out

    def generate(self, model: Any, inputs: ModelInputs, max_new_tokens: int) -> np.ndarray:
        import torch

        with torch.no_grad():
            tokens = model.generate(**torch_inputs(inputs), max_new_tokens=max_new_tokens, do_sample=False,
                                    eos_token_id=None, pad_token_id=0)
        return tokens[:, inputs.input_ids.shape[1]:].numpy()
