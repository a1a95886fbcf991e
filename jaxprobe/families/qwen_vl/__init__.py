"""Qwen2-VL and Qwen2.5-VL (8 of the study's 14 models, and its Qwen2.5-VL-7B baseline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from jaxprobe.families import sharding
from jaxprobe.families.base import ModelInputs, SiteLayout
from jaxprobe.families.qwen_vl import config as qwen_config
from jaxprobe.families.qwen_vl import keymap as qwen_keymap
from jaxprobe.models.config import VLMConfig
from jaxprobe.weights.reader import read_config_json

INIT_TOKENS = 8  # param shapes depend on neither the sequence length nor the image grid

# rules shared with other families and the format: jaxprobe/families/sharding.py
SHARDING_RULES = [
    *sharding.DECODER,
    (r"vision/blocks/mlp/(fc1|gate_proj|up_proj)/kernel", (None, None, "model")),
    (r"vision/blocks/mlp/(fc1|gate_proj|up_proj)/bias", (None, "model")),
    (r"vision/blocks/mlp/(fc2|down_proj)/kernel", (None, "model", None)),
    (r"vision/blocks/proj/kernel", (None, "model", None)),
    (r"vision/blocks/qkv/kernel", (None, None, "model")),  # fused q|k|v columns: XLA reshards at the split
    (r"vision/blocks/qkv/bias", (None, "model")),
    (r"vision/patch_embed/kernel", (None, "model")),
    (r"connector/mlp_0/kernel", (None, "model")),
    (r"connector/mlp_0/bias", ("model",)),
    (r"connector/mlp_2/kernel", ("model", None)),
]


class QwenVLFamily:
    name = "qwen_vl"
    model_types = qwen_config.MODEL_TYPES
    refused_model_types: ClassVar[dict[str, str]] = {}
    converter_version = 3  # 2: scanned layers, separate connector module; 3: norms named by role

    def parse_config(self, config_json: dict[str, Any]) -> VLMConfig:
        return qwen_config.parse_config(config_json)

    def keymap(self, config: VLMConfig):
        return qwen_keymap.keymap(config.text.tie_word_embeddings)

    def sharding_rules(self, config: VLMConfig) -> list[tuple[str, tuple[str | None, ...]]]:
        return SHARDING_RULES

    def init_inputs(self, config: VLMConfig) -> ModelInputs:
        merge = config.vision.merge_size
        grid = (1, 2 * merge, 2 * merge)
        ids = np.zeros((1, INIT_TOKENS), np.int32)
        return ModelInputs(input_ids=ids, attention_mask=np.ones_like(ids), positions=np.zeros((1, 3, INIT_TOKENS),
                           np.int32), pixels=np.zeros((1, grid[1] * grid[2], config.vision.patch_dim), np.float32),
                           image_mask=np.zeros((1, INIT_TOKENS), bool), last_index=np.zeros(1, np.int32),
                           image_grid=grid)

    def processor(self, checkpoint_dir: Path):
        from jaxprobe.families.qwen_vl.processor import QwenVLProcessor

        config = self.parse_config(read_config_json(checkpoint_dir))
        return QwenVLProcessor(checkpoint_dir, config.vision.merge_size, config.image_token_id)

    def synthetic_inputs(self, config: VLMConfig, batch: int = 1, seed: int = 0) -> ModelInputs:
        from jaxprobe.families.qwen_vl.processor import rope_index

        rng = np.random.default_rng(seed)
        merge = config.vision.merge_size
        grid = (1, 2 * merge, 3 * merge)  # not square: catches a swapped (h, w)
        tokens = grid[1] * grid[2] // merge**2
        text_ids = [i for i in range(min(config.text.vocab_size, 1000)) if i != config.image_token_id]
        rows = [np.concatenate([rng.choice(text_ids, 6), [config.image_token_id] * tokens, rng.choice(text_ids, 5)])
                for _ in range(batch)]
        ids = np.stack(rows).astype(np.int32)
        mask = np.ones_like(ids)
        return ModelInputs(input_ids=ids, attention_mask=mask,
                           positions=rope_index(ids, mask, grid, config.image_token_id, merge).astype(np.int32),
                           pixels=rng.normal(size=(batch, grid[1] * grid[2], config.vision.patch_dim)).astype(
                               np.float32), image_mask=ids == config.image_token_id,
                           last_index=np.full(batch, ids.shape[1] - 1, np.int32), image_grid=grid)

    def site_layout(self, config: VLMConfig) -> SiteLayout:
        return SiteLayout.reading_last_block(config)

    def tiny_checkpoint(self, out_dir: Path, model_type: str, seed: int = 0) -> Path:
        from jaxprobe.families.qwen_vl.tiny import write_tiny_checkpoint

        return write_tiny_checkpoint(model_type, out_dir, seed)

    def reference(self):
        from jaxprobe.families.qwen_vl.reference import QwenVLReference

        return QwenVLReference()
