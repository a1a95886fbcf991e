"""One jitted forward per image grid: sown activations pooled on the device, plus the zero-shot answer.

Only the selected sites' [B, D] vectors and the option scores leave the device; the full activations of the
other layers are never materialised off it.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxprobe.capture.sites import Site, pool_sites
from jaxprobe.models.config import VLMConfig
from jaxprobe.models.layers import layer_name
from jaxprobe.models.registry import LoadedModel
from jaxprobe.models.rope_index import rope_index
from jaxprobe.parallel import pad_to_multiple


def sown_names(config: VLMConfig) -> list[str]:
    """The raw activations a model sows, in model order (sites are derived from these)."""
    vision = [f"vision.{layer_name(i, config.vision.depth)}" for i in range(config.vision.depth)]
    llm = [f"llm.{layer_name(i, config.text.num_layers)}" for i in range(config.text.num_layers)]
    return [*vision, "connector.output", *llm]


def _model_inputs(loaded: LoadedModel, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    images = len(batch["image_grid_thw"])
    pixels = batch["pixel_values"].reshape(images, -1, batch["pixel_values"].shape[-1]).astype(np.float32)
    positions = rope_index(batch["input_ids"], batch["attention_mask"], batch["image_grid_thw"],
                           loaded.config.image_token_id, loaded.config.vision.merge_size)
    return (batch["input_ids"], batch["attention_mask"], np.moveaxis(positions, 1, 0), pixels,
            batch["image_mask"], batch["last_index"])


class PooledForward:
    """Callable over processor outputs -> ({site: [B, D]}, answers); compiled once per image grid."""

    def __init__(self, loaded: LoadedModel, sites: Sequence[Site], option_ids: Sequence[int], mesh: Mesh | None):
        self.loaded, self.sites, self.mesh = loaded, list(sites), mesh
        self.option_ids = jnp.asarray(option_ids)
        self._compiled: dict[tuple[int, ...], object] = {}

    def _function(self, grid: tuple[int, ...]):
        if grid not in self._compiled:
            model, sites, options = self.loaded.module(grid), self.sites, self.option_ids

            def forward(params, ids, mask, positions, pixels, image_mask, last_index):
                logits, state = model.apply({"params": params}, ids, mask, jnp.moveaxis(positions, 0, 1), pixels,
                                            mutable=["intermediates"])
                sown = {name: value[0] for part in state["intermediates"].values() for name, value in part.items()}
                pooled = pool_sites(sites, sown, image_mask, last_index)
                answer = jnp.take_along_axis(logits, last_index[:, None, None], axis=1)[:, 0][:, options]
                return pooled, jax.nn.softmax(answer.astype(jnp.float32), axis=-1)

            self._compiled[grid] = jax.jit(forward)
        return self._compiled[grid]

    def _place(self, array: np.ndarray):
        if self.mesh is None:
            return jnp.asarray(array)
        padded = pad_to_multiple(array, self.mesh.devices.size)
        spec = PartitionSpec(self.mesh.axis_names[0], *([None] * (padded.ndim - 1)))
        return jax.device_put(padded, NamedSharding(self.mesh, spec))

    def __call__(self, batch: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
        count = len(batch["input_ids"])
        grid = tuple(int(g) for g in batch["image_grid_thw"][0])
        inputs = [self._place(np.asarray(a)) for a in _model_inputs(self.loaded, batch)]
        pooled, probs = self._function(grid)(self.loaded.params, *inputs)
        features = {name: np.asarray(value)[:count] for name, value in pooled.items()}
        probs = np.asarray(probs)[:count]
        answers = pd.DataFrame({"answer_pred": probs.argmax(-1), "answer_prob": probs.max(-1)})
        for k in range(probs.shape[1]):
            answers[f"answer_score_{k}"] = probs[:, k]
        return features, answers
