"""transformers' VideoLLaMA3 with a Hulu-Med checkpoint's weights renamed into it: the parity reference.

transformers has no Hulu-Med class, and jaxprobe never runs remote code. Hulu-Med is a fork of VideoLLaMA3 whose
forward (SigLIP-NaViT encoder with 2-D rotary and block-diagonal attention per image, Linear-GELU-Linear
projector, a plain Qwen2/Qwen3 decoder) is what transformers' native ``video_llama_3`` computes, so the
checkpoint's tensors are renamed into ``VideoLlama3ForConditionalGeneration`` (first matching prefix):

==========================================  ==========================================
Hulu-Med (hub or original layout)           transformers ``video_llama_3``
==========================================  ==========================================
``model.vision_encoder.vision_encoder.``    ``model.vision_model.``  (original layout)
``model.vision_encoder.``                   ``model.vision_model.``
``model.mm_projector.``                     ``model.projector.``
``model.`` (embed_tokens, layers, norm)     ``model.language_model.``
``lm_head.weight``                          ``lm_head.weight`` (absent when tied)
==========================================  ==========================================

and loaded strictly: a tensor left over or a parameter left unfilled is a ``CheckpointError``. Only the forward
is borrowed: VideoLLaMA3's image processor differs from Hulu's, so inputs always come from our processor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jaxprobe.errors import CheckpointError
from jaxprobe.families.base import ModelInputs, require_torch
from jaxprobe.families.hulumed.config import VISION_DEFAULTS, VISION_ROPE_THETA, llm_config, parse_config
from jaxprobe.families.torch_reference import greedy_new_tokens, hooked_forward
from jaxprobe.weights.reader import checkpoint_headers, read_config_json

RENAMES = (
    ("model.vision_encoder.vision_encoder.", "model.vision_model."),
    ("model.vision_encoder.", "model.vision_model."),
    ("model.mm_projector.", "model.projector."),
    ("model.", "model.language_model."),
)


def video_llama_3_name(name: str) -> str:
    """The ``video_llama_3`` parameter a Hulu-Med tensor fills (table in the module docstring)."""
    for hulu, native in RENAMES:
        if name.startswith(hulu):
            return native + name[len(hulu):]
    return name


def video_llama_3_config(config_json: dict[str, Any]) -> Any:
    """``VideoLlama3Config`` of a Hulu-Med config.json: its Qwen2/Qwen3 LLM, NaViT encoder and image token."""
    from transformers import VideoLlama3Config

    parse_config(config_json)  # refuse what jaxprobe refuses before building anything
    llm = llm_config(config_json)
    vision = {**VISION_DEFAULTS, **config_json["vision_encoder_config"]}
    vision.pop("model_type")
    vision["rope_parameters"] = {"rope_type": "axial", "rope_theta": VISION_ROPE_THETA}
    return VideoLlama3Config(text_config=llm.to_dict(), vision_config=vision,
                             image_token_id=int(config_json["image_token_index"]),
                             tie_word_embeddings=bool(llm.tie_word_embeddings))


def renamed_state_dict(checkpoint_dir: Path) -> dict[str, Any]:
    """Every tensor of the checkpoint under its ``video_llama_3`` name (``load_state_dict`` casts to the model's
    dtype)."""
    from safetensors.torch import load_file

    state = {}
    for file in checkpoint_headers(checkpoint_dir):
        state.update({video_llama_3_name(name): tensor for name, tensor in load_file(file).items()})
    return state


def torch_inputs(inputs: ModelInputs) -> dict[str, Any]:
    """What VideoLLaMA3's forward takes for our inputs: packed patches, per-image grids and merge sizes (1)."""
    import torch

    pixels = np.asarray(inputs.pixels, np.float32)
    arrays = {"input_ids": np.asarray(inputs.input_ids, np.int64),
              "attention_mask": np.asarray(inputs.attention_mask, np.int64),
              "pixel_values": pixels.reshape(-1, pixels.shape[-1]),
              "image_grid_thw": np.tile(np.asarray(inputs.image_grid, np.int64), (inputs.batch_size, 1)),
              "image_merge_sizes": np.ones(inputs.batch_size, np.int64)}
    return {key: torch.from_numpy(value) for key, value in arrays.items()}


class HuluMedReference:
    def load(self, checkpoint_dir: Path, dtype: str = "float32") -> Any:
        """VideoLLaMA3 in ``dtype`` holding the checkpoint's weights (every tensor used, every parameter filled)."""
        require_torch()
        import torch
        from transformers import VideoLlama3ForConditionalGeneration

        checkpoint_dir = Path(checkpoint_dir)
        config = video_llama_3_config(read_config_json(checkpoint_dir))
        model = VideoLlama3ForConditionalGeneration(config).to(getattr(torch, dtype)).eval()
        missing, unexpected = model.load_state_dict(renamed_state_dict(checkpoint_dir), strict=False)
        allowed = {"lm_head.weight"} if config.tie_word_embeddings else set()
        if unexpected or set(missing) - allowed:
            raise CheckpointError(f"{checkpoint_dir} does not fill transformers' VideoLLaMA3 after renaming: "
                                  f"unexpected {sorted(unexpected)[:3]}, missing {sorted(set(missing) - allowed)[:3]}")
        model.tie_weights()
        return model

    def run(self, model: Any, inputs: ModelInputs) -> dict[str, np.ndarray]:
        """Every encoder block's output, the projector output, every decoder layer's output, and the logits."""
        import torch

        tensors = torch_inputs(inputs)
        positions = torch.from_numpy(np.asarray(inputs.positions, np.int64)[:, 0])
        sites, (logits, projected) = hooked_forward(
            model.model.vision_model.encoder.layers, model.model.language_model.layers, lambda: (
                model(**tensors, position_ids=positions).logits,
                model.model.get_image_features(tensors["pixel_values"], tensors["image_grid_thw"],
                                               tensors["image_merge_sizes"]).pooler_output))
        out = {key: value.reshape(inputs.batch_size, -1, value.shape[-1]) for key, value in sites.items()}
        out["connector.output"] = torch.stack(list(projected)).float().numpy()
        out["logits"] = logits.float().numpy()
        return out

    def generate(self, model: Any, inputs: ModelInputs, max_new_tokens: int) -> np.ndarray:
        """Greedy, no EOS stop; positions from the attention mask (cumsum - 1), as ours."""
        return greedy_new_tokens(model, torch_inputs(inputs), max_new_tokens)
