"""From a checkpoint directory to (module, params): config translation, abstract params, key map, loading."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jaxprobe.models.config import VLMConfig, from_hf_config
from jaxprobe.models.qwen_vision import Grid
from jaxprobe.models.vlm import VisionLanguageModel
from jaxprobe.weights.loader import ShardingFor, load_params
from jaxprobe.weights.qwen_keys import QwenVLKeyMap

INIT_TOKENS = 8  # shapes of the params do not depend on the sequence or the image grid


def init_grid(config: VLMConfig) -> Grid:
    return (1, 2 * config.vision.merge_size, 2 * config.vision.merge_size)


def abstract_params(config: VLMConfig) -> dict[str, Any]:
    """The params tree's shapes and dtypes, without allocating it."""
    grid = init_grid(config)
    patches = grid[1] * grid[2]
    ids = jnp.zeros((1, INIT_TOKENS), jnp.int32)
    model = VisionLanguageModel(config, grid)
    shapes = jax.eval_shape(model.init, jax.random.key(0), ids, jnp.ones_like(ids), jnp.zeros((3, 1, INIT_TOKENS),
                            jnp.int32), jnp.zeros((1, patches, config.vision.patch_dim), jnp.float32))
    return shapes["params"]


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    config: VLMConfig
    params: dict[str, Any]

    def module(self, grid: Grid) -> VisionLanguageModel:
        """The model for one image grid (a jit cache key: one compilation per grid)."""
        return VisionLanguageModel(self.config, tuple(int(g) for g in grid))


def family_for(config_json: dict) -> tuple[QwenVLKeyMap, dict[str, Any]]:
    """The conversion cache's hook: key map and abstract params for a parsed ``config.json``."""
    config = from_hf_config(config_json)
    return QwenVLKeyMap(config.text.tie_word_embeddings), abstract_params(config)


def load_model(checkpoint_dir: str | Path, dtype: Any = "float32",
               sharding_for: ShardingFor | None = None) -> LoadedModel:
    """Translate the config and stream the safetensors into our params tree."""
    config = from_hf_config(checkpoint_dir)
    keymap = QwenVLKeyMap(config.text.tie_word_embeddings)
    params = load_params(checkpoint_dir, keymap, abstract_params(config), dtype, sharding_for)
    return LoadedModel(config, params)
