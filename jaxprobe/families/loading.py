"""From a checkpoint directory to a ``LoadedModel``: family, config, params placed on the mesh.

Params come from the orbax cache when the checkpoint was converted before (same files, dtype and converter
version), else from the safetensors through the family's key map, and are then cached. Each leaf is placed with
the family's sharding rules over the mesh's ``model`` axis as it is read or restored.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.sharding import Mesh

from jaxprobe.families.base import Family, SiteLayout
from jaxprobe.families.registry import family_for_model_type
from jaxprobe.models.config import RunPlan, VLMConfig
from jaxprobe.models.vlm import VisionLanguageModel
from jaxprobe.parallel import param_sharding
from jaxprobe.weights import cache
from jaxprobe.weights.loader import ShardingFor, load_params, resolve_dtype
from jaxprobe.weights.reader import read_config_json


def abstract_variables(family: Family, config: VLMConfig) -> dict[str, Any]:
    """Shapes and dtypes of the params and of everything the model sows, without allocating anything."""
    model = VisionLanguageModel(config, RunPlan.full(config))
    inputs = jax.tree.map(jnp.asarray, family.init_inputs(config))
    return jax.eval_shape(functools.partial(model.init, mutable=True), jax.random.key(0), inputs)


def abstract_params(family: Family, config: VLMConfig) -> dict[str, Any]:
    """The params tree's shapes and dtypes, without allocating it."""
    return abstract_variables(family, config)["params"]


def converter_version(family: Family) -> str:
    return f"{family.name}/{family.converter_version}"


def converter_for(config_json: dict[str, Any]) -> cache.Converter:
    """The weights cache's hook (``jaxprobe convert``): key map, abstract params and converter version."""
    family = family_for_model_type(config_json.get("model_type"))
    config = family.parse_config(config_json)
    return cache.Converter(family.keymap(config), abstract_params(family, config), converter_version(family))


def sharding_for(family: Family, config: VLMConfig, mesh: Mesh | None) -> ShardingFor | None:
    """Placement of each param leaf over ``mesh`` by the family's rules (None: the default device)."""
    if mesh is None:
        return None
    shapes = traverse_util.flatten_dict(abstract_params(family, config))
    rules = family.sharding_rules(config)
    return lambda path: param_sharding(mesh, rules, path, shapes[path].shape)


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    family: Family
    config: VLMConfig
    params: dict[str, Any]
    dtype: np.dtype
    checkpoint: Path
    cache_entry: Path | None = None  # where the params came from / went to (None: cache not used)
    cache_hit: bool = False

    def module(self, plan: RunPlan | None = None) -> VisionLanguageModel:
        return VisionLanguageModel(self.config, plan or RunPlan.full(self.config), jnp.dtype(self.dtype))

    @property
    def site_layout(self) -> SiteLayout:
        return self.family.site_layout(self.config)


def load_model(checkpoint_dir: str | Path, dtype: Any = "float32", mesh: Mesh | None = None,
               cache_dir: str | Path | bool | None = None) -> LoadedModel:
    """Translate the config and load params (cached: ``cache_dir`` None -> the default cache, False -> no cache)."""
    checkpoint_dir = Path(checkpoint_dir)
    family = family_for_model_type(read_config_json(checkpoint_dir).get("model_type"))
    config = family.parse_config(read_config_json(checkpoint_dir))
    placement = sharding_for(family, config, mesh)

    def convert() -> dict[str, Any]:
        check = getattr(family, "check_checkpoint", None)  # optional: a family's own checks of the files
        if check is not None:
            check(checkpoint_dir, config)
        return load_params(checkpoint_dir, family.keymap(config), abstract_params(family, config), dtype, placement)

    if cache_dir is False:
        return LoadedModel(family, config, convert(), resolve_dtype(dtype), checkpoint_dir)
    root = Path(cache_dir) if cache_dir else cache.default_cache_dir()
    result = cache.load_or_convert(checkpoint_dir, root, dtype, convert, converter_version(family), placement)
    return LoadedModel(family, config, result.params, resolve_dtype(dtype), checkpoint_dir, result.entry, result.hit)
