"""Hulu-Med (4B, 7B, 14B, 32B: 4 of the study's 14 models), without its remote code.

A VideoLLaMA3 fork: a SigLIP-initialised NaViT encoder with 2-D rotary at native resolution (``navit`` tower), an
``mlp2x_gelu`` projector, and a plain Qwen2.5 (7B, 32B) or Qwen3 (4B, 14B) decoder with 1-D rotary positions.
Everything known about it, with sources: ../shared/families/hulumed.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from jaxprobe.families import sharding
from jaxprobe.families.base import ModelInputs, SiteLayout, last_token_index
from jaxprobe.families.hulumed import config as hulu_config
from jaxprobe.families.hulumed import keymap as hulu_keymap
from jaxprobe.models.config import VLMConfig
from jaxprobe.weights.reader import read_config_json

INIT_TOKENS = 8  # param shapes depend on neither the sequence length nor the image grid

# rules shared with other families and the format: jaxprobe/families/sharding.py
SHARDING_RULES = [
    *sharding.DECODER,
    *sharding.VIT_BLOCKS,
    (r"vision/patch_embed/bias", ("model",)),
    *sharding.MLP2X_CONNECTOR,
]


def one_image_inputs(config: VLMConfig, prefix: np.ndarray, suffix: np.ndarray, grid: tuple[int, int, int],
                     pixels: np.ndarray) -> ModelInputs:
    """Unpadded inputs whose rows are ``prefix``, the image's tokens, ``suffix`` (ids [B, *]), 1-D positions."""
    batch = len(prefix)
    image = np.full((batch, grid[1] * grid[2]), config.image_token_id)
    ids = np.concatenate([prefix, image, suffix], axis=1).astype(np.int32)
    mask = np.ones_like(ids)
    return ModelInputs(input_ids=ids, attention_mask=mask, positions=(mask.cumsum(1) - 1)[:, None].astype(np.int32),
                       pixels=pixels.astype(np.float32), image_mask=ids == config.image_token_id,
                       last_index=last_token_index(mask), image_grid=grid)


class HuluMedFamily:
    name = "hulumed"
    model_types = hulu_config.MODEL_TYPES
    refused_model_types: ClassVar[dict[str, str]] = {}
    converter_version = 1

    def parse_config(self, config_json: dict[str, Any]) -> VLMConfig:
        return hulu_config.parse_config(config_json)

    def keymap(self, config: VLMConfig):
        return hulu_keymap.keymap(config.text.tie_word_embeddings)

    def sharding_rules(self, config: VLMConfig) -> list[tuple[str, tuple[str | None, ...]]]:
        return SHARDING_RULES

    def init_inputs(self, config: VLMConfig) -> ModelInputs:
        grid = (1, 2, 2)
        empty = np.zeros((1, INIT_TOKENS // 2), np.int32)
        return one_image_inputs(config, empty, empty, grid, np.zeros((1, 4, config.vision.patch_dim)))

    def processor(self, checkpoint_dir: Path):
        from jaxprobe.families.hulumed.processor import HuluMedProcessor

        return HuluMedProcessor(checkpoint_dir, self.parse_config(read_config_json(checkpoint_dir)))

    def synthetic_inputs(self, config: VLMConfig, batch: int = 1, seed: int = 0) -> ModelInputs:
        rng = np.random.default_rng(seed)
        grid = (1, 2, 3)  # not square: catches a swapped (h, w)
        text_ids = [i for i in range(min(config.text.vocab_size, 1000)) if i != config.image_token_id]
        pixels = rng.normal(size=(batch, grid[1] * grid[2], config.vision.patch_dim))
        return one_image_inputs(config, rng.choice(text_ids, (batch, 6)), rng.choice(text_ids, (batch, 5)), grid,
                                pixels)

    def site_layout(self, config: VLMConfig) -> SiteLayout:
        """The projector reads the last block's output (through the encoder's final LayerNorm)."""
        return SiteLayout.reading_last_block(config)

    def tiny_checkpoint(self, out_dir: Path, model_type: str, seed: int = 0) -> Path:
        from jaxprobe.families.hulumed.tiny import write_tiny_checkpoint

        return write_tiny_checkpoint(model_type, out_dir, seed)

    def reference(self):
        from jaxprobe.families.hulumed.reference import HuluMedReference

        return HuluMedReference()
