"""Gemma 3 (``Gemma3ForConditionalGeneration``): MedGemma-4B, MedGemma-27B, MedGemma-1.5-4B and the Gemma-3-4B
base. SigLIP tower (896 px, no CLS) -> average-pooling projector -> Gemma 3 decoder with bidirectional attention
among each image's tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from jaxprobe.families import sharding
from jaxprobe.families.base import ModelInputs, SiteLayout, last_token_index
from jaxprobe.families.gemma3 import config as gemma3_config
from jaxprobe.families.gemma3 import keymap as gemma3_keymap
from jaxprobe.families.gemma3.processor import one_d_positions
from jaxprobe.models.config import VLMConfig
from jaxprobe.weights.reader import read_config_json

INIT_TOKENS = 8  # param shapes depend on the image size (position embeddings) but not on the sequence length
TEXT_BEFORE, TEXT_AFTER = 6, 5  # synthetic prompts: random text around the image span

# rules shared with other families and the format: jaxprobe/families/sharding.py
SHARDING_RULES = [
    *sharding.DECODER,
    *sharding.VIT_BLOCKS,
    (r"vision/patch_embed/bias", ("model",)),  # 896 px SigLIP: patch embedding [588, 1152]
    (r"vision/position_embedding", (None, "model")),  # [4096, 1152]: larger than a block's attention
    (r"connector/projection/kernel", (None, "model")),
]


class Gemma3Family:
    name = "gemma3"
    model_types = gemma3_config.MODEL_TYPES
    refused_model_types: ClassVar[dict[str, str]] = {"gemma3_text": gemma3_config.TEXT_ONLY_REASON}
    converter_version = 1

    def parse_config(self, config_json: dict[str, Any]) -> VLMConfig:
        return gemma3_config.parse_config(config_json)

    def keymap(self, config: VLMConfig):
        return gemma3_keymap.keymap(config.text.tie_word_embeddings)

    def sharding_rules(self, config: VLMConfig) -> list[tuple[str, tuple[str | None, ...]]]:
        return SHARDING_RULES

    def _pixels(self, config: VLMConfig, batch: int, rng: np.random.Generator | None = None) -> np.ndarray:
        shape = (batch, config.vision.in_channels, config.vision.image_size, config.vision.image_size)
        return np.zeros(shape, np.float32) if rng is None else rng.uniform(-1, 1, shape).astype(np.float32)

    def _grid(self, config: VLMConfig) -> tuple[int, int, int]:
        return (1, *(config.vision.image_size // config.vision.patch_size,) * 2)

    def init_inputs(self, config: VLMConfig) -> ModelInputs:
        ids = np.zeros((1, INIT_TOKENS), np.int32)
        return ModelInputs(input_ids=ids, attention_mask=np.ones_like(ids), positions=np.zeros((1, 1, INIT_TOKENS),
                           np.int32), pixels=self._pixels(config, 1), image_mask=np.zeros((1, INIT_TOKENS), bool),
                           last_index=np.zeros(1, np.int32), image_grid=self._grid(config))

    def processor(self, checkpoint_dir: Path):
        from jaxprobe.families.gemma3.processor import Gemma3Processor

        config = self.parse_config(read_config_json(checkpoint_dir))
        return Gemma3Processor(checkpoint_dir, config, gemma3_config.mm_tokens_per_image(config))

    def synthetic_inputs(self, config: VLMConfig, batch: int = 1, seed: int = 0) -> ModelInputs:
        """Random text around one span of image tokens (the tower's fixed size makes the grid square)."""
        rng = np.random.default_rng(seed)
        tokens = gemma3_config.mm_tokens_per_image(config)
        text_ids = [i for i in range(min(config.text.vocab_size, 1000)) if i != config.image_token_id]
        rows = [np.concatenate([rng.choice(text_ids, TEXT_BEFORE), [config.image_token_id] * tokens,
                                rng.choice(text_ids, TEXT_AFTER)]) for _ in range(batch)]
        ids = np.stack(rows).astype(np.int32)
        mask = np.ones_like(ids)
        return ModelInputs(input_ids=ids, attention_mask=mask, positions=one_d_positions(mask),
                           pixels=self._pixels(config, batch, rng), image_mask=ids == config.image_token_id,
                           last_index=last_token_index(mask), image_grid=self._grid(config))

    def site_layout(self, config: VLMConfig) -> SiteLayout:
        """The projector reads the last SigLIP block (after the tower's final LayerNorm)."""
        return SiteLayout.reading_last_block(config)

    def tiny_checkpoint(self, out_dir: Path, model_type: str, seed: int = 0) -> Path:
        from jaxprobe.families.gemma3.tiny import write_tiny_checkpoint

        return write_tiny_checkpoint(model_type, out_dir, seed)

    def reference(self):
        from jaxprobe.families.gemma3.reference import Gemma3Reference

        return Gemma3Reference()
