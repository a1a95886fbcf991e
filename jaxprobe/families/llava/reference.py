"""transformers' PyTorch ``LlavaForConditionalGeneration`` as the parity reference, for both layouts (imports
torch: used lazily).

transformers has no class for the LLaVA repository's layout, so a repository checkpoint is converted first: its
tensors renamed into the llava-hf layout (``keymap.REPOSITORY_TO_HF``, the documented renaming) and its config
rewritten as a ``llava`` config (``llava_hf_config``), then loaded by transformers with every tensor used and every
weight filled. The tower's architecture comes from the tower folder's own config.json when the checkpoint ships
one (what LLaVA's code loads), else from the same source as our translation.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from jaxprobe.errors import CheckpointError
from jaxprobe.families.base import ModelInputs, require_torch
from jaxprobe.families.llava import repository
from jaxprobe.families.llava.config import is_repository_layout
from jaxprobe.families.llava.keymap import to_llava_hf
from jaxprobe.families.tiny import write_json
from jaxprobe.families.torch_reference import greedy_new_tokens, hooked_forward
from jaxprobe.weights.reader import SINGLE_FILE, checkpoint_headers, read_config_json, read_slice


def _tower_fields(checkpoint_dir: Path, config_json: dict[str, Any]) -> dict[str, Any]:
    """The CLIPVisionConfig dict of a repository checkpoint's tower (the folder's config.json first)."""
    folder = repository.tower_dir(checkpoint_dir, config_json)
    if folder is not None and (folder / "config.json").is_file():
        data = json.loads((folder / "config.json").read_text())
        fields = data["vision_config"] if data.get("model_type") == "clip" else data
    else:
        fields = repository.tower_config(config_json).to_dict()
    return {**fields, "model_type": "clip_vision_model"}


def llava_hf_config(checkpoint_dir: Path, config_json: dict[str, Any]) -> dict[str, Any]:
    """A repository-layout config.json as transformers' ``llava`` config computing the same model."""
    text = {key: value for key, value in repository.llm_fields(config_json).items() if key != "architectures"}
    text["model_type"] = repository.LLM_OF[config_json["model_type"]]
    select = config_json.get("mm_vision_select_feature", repository.DEFAULTS["mm_vision_select_feature"])
    vision = _tower_fields(checkpoint_dir, config_json)
    tokens = (vision["image_size"] // vision["patch_size"]) ** 2 + (select == "cls_patch")
    return {"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"], "text_config": text,
            "vision_config": vision, "image_token_index": repository.image_slot_id(text["vocab_size"]),
            "vision_feature_layer": config_json["mm_vision_select_layer"],
            "vision_feature_select_strategy": "default" if select == "patch" else "full",
            "projector_hidden_act": "gelu", "multimodal_projector_bias": True, "image_seq_length": tokens,
            "tie_word_embeddings": bool(text.get("tie_word_embeddings", False))}


def convert_repository(checkpoint_dir: Path, out_dir: Path) -> Path:
    """Write a repository-layout checkpoint as a llava-hf one (float32 tensors, renamed) into ``out_dir``."""
    from safetensors.numpy import save_file

    config_json = read_config_json(checkpoint_dir)
    tensors = {}
    for file, infos in checkpoint_headers(checkpoint_dir).items():
        for name, info in infos.items():
            tensors[to_llava_hf(name)] = read_slice(file, info, dtype=np.dtype(np.float32))
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out_dir / SINGLE_FILE, metadata={"format": "pt"})
    write_json(out_dir / "config.json", llava_hf_config(checkpoint_dir, config_json))
    return out_dir


def _load_strictly(directory: Path, dtype: str) -> Any:
    from transformers import LlavaForConditionalGeneration

    model, info = LlavaForConditionalGeneration.from_pretrained(directory, dtype=dtype, output_loading_info=True)
    problems = {key: sorted(value)[:5] for key, value in info.items() if value}
    if problems:
        raise CheckpointError(f"transformers' llava classes do not load the renamed checkpoint cleanly: {problems}")
    return model.eval()


def torch_inputs(inputs: ModelInputs, image_token_id: int, positions: bool = True) -> dict[str, Any]:
    """What transformers' forward takes: ids (image tokens where ``image_mask`` is), mask, pixels, positions."""
    import torch

    ids = np.asarray(inputs.input_ids, np.int64)
    image_mask = np.asarray(inputs.image_mask, bool)
    if not np.array_equal(ids == image_token_id, image_mask):
        raise CheckpointError(f"token id {image_token_id} stands outside the image slots of these inputs; the "
                              "reference finds image tokens by id, so it cannot compare them")
    arrays = {"input_ids": ids, "attention_mask": np.asarray(inputs.attention_mask, np.int64),
              "pixel_values": np.asarray(inputs.pixels, np.float32)}
    if positions:
        arrays["position_ids"] = np.asarray(inputs.positions, np.int64)[:, 0]
    return {key: torch.from_numpy(value) for key, value in arrays.items()}


class LlavaReference:
    def load(self, checkpoint_dir: Path, dtype: str = "float32") -> Any:
        """transformers' llava model in ``dtype`` (a repository checkpoint after the documented renaming)."""
        require_torch()
        checkpoint_dir = Path(checkpoint_dir)
        if not is_repository_layout(read_config_json(checkpoint_dir)):
            return _load_strictly(checkpoint_dir, dtype)
        with tempfile.TemporaryDirectory() as scratch:
            return _load_strictly(convert_repository(checkpoint_dir, Path(scratch)), dtype)

    def run(self, model: Any, inputs: ModelInputs) -> dict[str, np.ndarray]:
        """Every CLIP block's output, the projector output, every decoder layer's output, and the logits."""
        import torch

        tensors = torch_inputs(inputs, model.config.image_token_index)
        out, (logits, projected) = hooked_forward(
            model.model.vision_tower.encoder.layers, model.model.language_model.layers,
            lambda: (model(**tensors).logits, model.model.get_image_features(tensors["pixel_values"]).pooler_output))
        out["connector.output"] = torch.stack(list(projected)).float().numpy()
        out["logits"] = logits.float().numpy()
        return out

    def generate(self, model: Any, inputs: ModelInputs, max_new_tokens: int) -> np.ndarray:
        return greedy_new_tokens(model, torch_inputs(inputs, model.config.image_token_index, positions=False),
                                 max_new_tokens)
