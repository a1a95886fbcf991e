"""LLaVA-style models: HuatuoGPT-Vision-34B / -7B and LLaVA-Med v1.5 in the LLaVA repository's own layout
(``llava_llama``, ``llava_qwen2``, ``llava_mistral``), and transformers' ``llava`` (the -hf conversions).

CLIP ViT tower (every block a site, with patch-mean and CLS poolings; the projector reads block ``k`` of
``hidden_states[k]``, LLaVA's -2), ``mlp2x_gelu`` projector, Llama / Mistral / Qwen2 decoder. How each piece is
read: ``config.py`` / ``repository.py`` (config.json), ``keymap.py`` (tensor names, the documented renaming),
``processor.py`` and PROMPT.md (prompts), ``tower_check.py`` (the repository's two tower copies), ``tiny.py``,
``reference.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from jaxprobe.families import sharding
from jaxprobe.families.base import ModelInputs, SiteLayout, last_token_index
from jaxprobe.families.llava import config as llava_config
from jaxprobe.families.llava import keymap as llava_keymap
from jaxprobe.families.llava.config import image_tokens
from jaxprobe.families.llava.processor import one_d_positions
from jaxprobe.models.config import VLMConfig
from jaxprobe.models.layers import layer_name

INIT_TOKENS = 8  # param shapes depend on neither the sequence length nor the image tokens' count

# rules shared with other families and the format: jaxprobe/families/sharding.py
SHARDING_RULES = [
    *sharding.DECODER,
    *sharding.VIT_BLOCKS,
    (r"vision/position_embedding", (None, "model")),
    *sharding.MLP2X_CONNECTOR,
]


class LlavaFamily:
    name = "llava"
    model_types = llava_config.MODEL_TYPES
    refused_model_types: ClassVar[dict[str, str]] = {
        "llava_next": "LLaVA-NeXT's anyres tiling is not implemented; jaxprobe's llava family runs LLaVA-1.5-style "
                      "checkpoints (one CLIP image per prompt)",
    }
    converter_version = 1

    def parse_config(self, config_json: dict[str, Any]) -> VLMConfig:
        return llava_config.parse_config(config_json)

    def keymap(self, config: VLMConfig):
        return llava_keymap.keymap(config.text.tie_word_embeddings)

    def sharding_rules(self, config: VLMConfig) -> list[tuple[str, tuple[str | None, ...]]]:
        return SHARDING_RULES

    def init_inputs(self, config: VLMConfig) -> ModelInputs:
        size = config.vision.image_size
        ids = np.zeros((1, INIT_TOKENS), np.int32)
        return ModelInputs(input_ids=ids, attention_mask=np.ones_like(ids),
                           positions=one_d_positions(np.ones_like(ids)),
                           pixels=np.zeros((1, config.vision.in_channels, size, size), np.float32),
                           image_mask=np.zeros_like(ids, bool), last_index=np.zeros(1, np.int32))

    def processor(self, checkpoint_dir: Path):
        from jaxprobe.families.llava.processor import make_processor
        from jaxprobe.weights.reader import read_config_json

        return make_processor(checkpoint_dir, self.parse_config(read_config_json(checkpoint_dir)))

    def synthetic_inputs(self, config: VLMConfig, batch: int = 1, seed: int = 0) -> ModelInputs:
        """Random text around one image span per row, random pixels at the tower's size."""
        rng = np.random.default_rng(seed)
        image = config.image_token_id
        text_ids = [i for i in range(min(config.text.vocab_size, 1000)) if i != image]
        tokens = image_tokens(config.vision)
        ids = np.stack([np.concatenate([rng.choice(text_ids, 6), [image] * tokens, rng.choice(text_ids, 5)])
                        for _ in range(batch)]).astype(np.int32)
        mask = np.ones_like(ids)
        size = config.vision.image_size
        return ModelInputs(input_ids=ids, attention_mask=mask, positions=one_d_positions(mask),
                           pixels=rng.normal(size=(batch, config.vision.in_channels, size, size)).astype(np.float32),
                           image_mask=ids == image, last_index=last_token_index(mask))

    def site_layout(self, config: VLMConfig) -> SiteLayout:
        depth = config.vision.depth
        source = config.vision.feature_layer % depth
        return SiteLayout(vision_depth=depth, llm_depth=config.text.num_layers,
                          connector_source=f"vision.{layer_name(source, depth)}", vision_cls=True)

    def check_checkpoint(self, checkpoint_dir: Path, config: VLMConfig) -> None:
        """Before converting: a repository checkpoint's tower is in its safetensors and matches its tower folder."""
        from jaxprobe.families.llava.tower_check import check_checkpoint

        check_checkpoint(checkpoint_dir, config)

    def tiny_checkpoint(self, out_dir: Path, model_type: str, seed: int = 0) -> Path:
        from jaxprobe.families.llava.tiny import write_tiny_checkpoint

        return write_tiny_checkpoint(model_type, out_dir, seed)

    def reference(self):
        from jaxprobe.families.llava.reference import LlavaReference

        return LlavaReference()
