"""One jitted forward per input shape: sown activations pooled on the device, plus the zero-shot answer
(option scores, and optionally the generated reply).

The forward is family-agnostic: it takes ``ModelInputs`` and the ``LoadedModel`` a family loaded. It computes only
what the selected sites and the answer need (``RunPlan``): no layer after the last selected one unless the answer
is asked for, no LLM for vision-only selections, logits only at the answer position. Only the selected sites'
[B, D] vectors and the option scores leave the device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.sharding import Mesh

from jaxprobe.capture.generate import Sampling, decode_loop, left_align
from jaxprobe.capture.sites import Site, pool_groups, split_groups
from jaxprobe.families.base import ModelInputs
from jaxprobe.families.loading import abstract_variables
from jaxprobe.models.config import RunPlan, VLMConfig
from jaxprobe.parallel import DATA_AXIS, batch_sharding, gather, local_rows, pad_to_multiple


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


@dataclasses.dataclass(frozen=True)
class ForwardOutput:
    """One batch's results, trimmed to its real rows: pooled sites, option probabilities, generated tokens."""

    features: dict[str, np.ndarray]  # site -> [B, D]
    option_probs: np.ndarray | None  # [B, options]: softmax over the option letters' first tokens
    tokens: np.ndarray | None  # [B, max_new_tokens] generated ids (EOS-filled after a row's EOS)


class PooledForward:
    """Callable over numpy ``ModelInputs`` -> ``ForwardOutput``; compiled once per input shape.

    With ``sampling`` the prompt is run as a cached prefill and the answer is generated in the same jitted call,
    so the sites, the option scores and the generated answer come from one pass over the prompt.
    """

    def __init__(self, loaded: Any, sites: Sequence[Site], answer: bool, mesh: Mesh | None,
                 sampling: Sampling | None = None, eos: Sequence[int] = ()):
        self.loaded, self.sites, self.mesh = loaded, list(sites), mesh
        self.sampling, self.eos = sampling, tuple(int(t) for t in eos)
        self.plan = run_plan(loaded.config, self.sites, answer=answer or sampling is not None)
        self._forward = jax.jit(self._pooled)

    def _pooled(self, params, inputs: ModelInputs, option_ids: jax.Array | None, key: jax.Array):
        module = self.loaded.module(self.plan)
        if self.sampling is None:
            logits, state = module.apply({"params": params}, inputs, mutable=["intermediates"])
        else:
            size = inputs.input_ids.shape[1] + self.sampling.max_new_tokens
            logits, state = module.apply({"params": params}, inputs, size, method=module.prefill,
                                         mutable=["intermediates", "cache"])
        pooled = pool_groups(self.sites, flatten_sown(state["intermediates"]), inputs.image_mask, inputs.last_index,
                             self.loaded.site_layout.vision_cls)
        probs = None if option_ids is None else jax.nn.softmax(logits[:, option_ids], axis=-1)
        tokens = None if self.sampling is None else decode_loop(params, module, inputs, logits, state["cache"], key,
                                                                self.sampling, self.eos)
        return pooled, probs, tokens

    def place(self, inputs: ModelInputs, global_batch: int | None = None) -> ModelInputs:
        """Split a batch over the ``data`` axis of the (possibly multi-process) mesh.

        ``global_batch`` None: ``inputs`` is the whole batch (on every process); it is padded to a multiple of the
        ``data`` axis and each process keeps its own rows. Otherwise ``inputs`` holds only this process's rows
        (``parallel.local_rows``) of a padded batch of ``global_batch`` rows: each host encodes only its images.
        """
        if self.mesh is None:
            return jax.tree.map(jnp.asarray, inputs)
        if global_batch is None:
            inputs = jax.tree.map(lambda a: pad_to_multiple(np.asarray(a), self.mesh.shape[DATA_AXIS]), inputs)
            global_batch = inputs.batch_size
            start, stop = local_rows(self.mesh, global_batch)
            inputs = jax.tree.map(lambda a: a[start:stop], inputs)
        return jax.tree.map(lambda a: jax.make_array_from_process_local_data(
            batch_sharding(self.mesh, np.ndim(a)), np.asarray(a), (global_batch, *np.shape(a)[1:])), inputs)

    def __call__(self, inputs: ModelInputs, option_ids: Sequence[int] | None = None, key: jax.Array | None = None,
                 global_batch: int | None = None, count: int | None = None) -> ForwardOutput:
        """Outputs for the batch's first ``count`` rows (default: all of ``inputs``), on every process."""
        count = inputs.batch_size if count is None else count
        if self.sampling is not None:
            inputs = left_align(inputs)
        ids = None if option_ids is None else jnp.asarray(option_ids)
        pooled, probs, tokens = self._forward(self.loaded.params, self.place(inputs, global_batch), ids,
                                              jax.random.key(0) if key is None else key)
        features = split_groups(self.sites, {key: gather(value)[:, :count] for key, value in pooled.items()})
        return ForwardOutput(features,
                             None if probs is None else gather(probs)[:count],
                             None if tokens is None else gather(tokens)[:count])
