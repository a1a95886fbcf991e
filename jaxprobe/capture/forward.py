"""One jitted forward per input shape: sown activations pooled on the device, plus the zero-shot answer.

The forward is family-agnostic: it takes ``ModelInputs`` and the ``LoadedModel`` a family loaded. It computes only
what the selected sites and the answer need (``RunPlan``): no layer after the last selected one unless the answer
is asked for, no LLM for vision-only selections, logits only at the answer position. Only the selected sites'
[B, D] vectors and the option scores leave the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax import traverse_util
from jax.sharding import Mesh

from jaxprobe.capture.sites import Site, pool_sites
from jaxprobe.families.base import ModelInputs
from jaxprobe.families.loading import abstract_variables
from jaxprobe.models.config import RunPlan, VLMConfig
from jaxprobe.parallel import DATA_AXIS, batch_sharding, pad_to_multiple


def flatten_sown(intermediates: dict) -> dict[str, jax.Array]:
    """{sown name: activation} from the ``intermediates`` collection (names are unique across the model)."""
    return {path[-1]: value[0] for path, value in traverse_util.flatten_dict(intermediates).items()}


def apply_sown(module, params: dict, inputs: ModelInputs, all_logits: bool = False):
    """(logits or None, {sown name: activation}) of one forward; jit it."""
    out, state = module.apply({"params": params}, inputs, all_logits, mutable=["intermediates"])
    return out, flatten_sown(state["intermediates"])


def sown_shapes(family: Any, config: VLMConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of everything a full forward sows (``jax.eval_shape``, no params needed)."""
    sown = flatten_sown(abstract_variables(family, config)["intermediates"])
    return {name: tuple(value.shape) for name, value in sown.items()}


def run_plan(config: VLMConfig, sites: Sequence[Site], answer: bool) -> RunPlan:
    """The least forward that yields ``sites`` (and the answer's logits when ``answer``)."""
    if answer:
        return RunPlan.full(config)
    last = {module: max((s.layer for s in sites if s.module == module and s.layer is not None), default=-1)
            for module in ("vision", "llm")}
    needs_llm = last["llm"] >= 0
    needs_connector = needs_llm or any(s.module == "connector" for s in sites)
    vision = config.vision.depth if needs_connector else last["vision"] + 1
    return RunPlan(vision_layers=vision, text_layers=last["llm"] + 1, logits=False, connector=needs_connector)


class PooledForward:
    """Callable over numpy ``ModelInputs`` -> ({site: [B, D]}, answers or None); compiled once per shape."""

    def __init__(self, loaded: Any, sites: Sequence[Site], option_ids: Sequence[int] | None, mesh: Mesh | None):
        self.loaded, self.sites, self.mesh = loaded, list(sites), mesh
        self.option_ids = None if option_ids is None else jnp.asarray(option_ids)
        self.plan = run_plan(loaded.config, self.sites, answer=option_ids is not None)
        self._forward = jax.jit(self._pooled)

    def _pooled(self, params, inputs: ModelInputs):
        logits, sown = apply_sown(self.loaded.module(self.plan), params, inputs)
        pooled = pool_sites(self.sites, sown, inputs.image_mask, inputs.last_index,
                            self.loaded.site_layout.vision_cls)
        if self.option_ids is None:
            return pooled, None
        return pooled, jax.nn.softmax(logits[:, self.option_ids], axis=-1)

    def place(self, inputs: ModelInputs) -> ModelInputs:
        """Pad the batch to a multiple of the ``data`` axis and split it over that axis."""
        if self.mesh is None:
            return jax.tree.map(jnp.asarray, inputs)
        size = self.mesh.shape[DATA_AXIS]
        return jax.tree.map(lambda a: jax.device_put(pad_to_multiple(np.asarray(a), size),
                                                     batch_sharding(self.mesh, np.ndim(a))), inputs)

    def __call__(self, inputs: ModelInputs) -> tuple[dict[str, np.ndarray], pd.DataFrame | None]:
        count = inputs.batch_size
        pooled, probs = self._forward(self.loaded.params, self.place(inputs))
        features = {name: np.asarray(value)[:count] for name, value in pooled.items()}
        if probs is None:
            return features, None
        probs = np.asarray(probs)[:count]
        answers = pd.DataFrame({"answer_pred": probs.argmax(-1), "answer_prob": probs.max(-1)})
        for k in range(probs.shape[1]):
            answers[f"answer_score_{k}"] = probs[:, k]
        return features, answers
