"""The vision-tower baseline: the MLLM's own tower + a linear head, trained with cross-entropy on ``train``.

This is the study's "traditional model" on the same split: the tower reads images exactly as in extraction, its
last block's output is pooled as the probe site ``vision.layer_<last>`` is (mean over patches, CLS left out),
standardised per image (a LayerNorm without parameters, so one learning rate suits the pretrained tower and the
fresh head) and classified by a linear head. The tower is fine-tuned in full (float32 master weights) or
through LoRA on its blocks; early stopping on ``val``; the kept weights are scored once on ``test``, and that
accuracy is the reference the visual-representation verdict compares the vision probes to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxprobe.capture.forward import flatten_sown
from jaxprobe.capture.sites import MEAN_PATCHES, Site, pool
from jaxprobe.families.base import ModelInputs
from jaxprobe.finetune.loop import Progress, evaluate_in_batches, place, train
from jaxprobe.finetune.lora import init_lora, join_lora, lora_shardings, replicated, split_lora
from jaxprobe.finetune.rows import Rows, padded
from jaxprobe.finetune.settings import VisionSettings
from jaxprobe.models.config import RunPlan
from jaxprobe.models.layers import LORA, LORA_DROPOUT, layer_name
from jaxprobe.models.stack import STACKED_SUFFIX
from jaxprobe.models.vlm import VisionLanguageModel
from jaxprobe.parallel import DATA_AXIS

SOURCE = "vision" + STACKED_SUFFIX


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class VisionBatch:
    inputs: ModelInputs  # pixels and grid as extraction encodes them (the prompt is ignored)
    labels: jax.Array
    weights: jax.Array  # 0 for rows that only pad the batch


def standardise(features: jax.Array, eps: float = 1e-5) -> jax.Array:
    centred = features - features.mean(-1, keepdims=True)
    return centred * jax.lax.rsqrt((centred**2).mean(-1, keepdims=True) + eps)


class VisionTask:
    """The ``loop.Task`` of the tower + linear head (``method`` "full": the tower's params are trained;
    "lora": only adapters on its blocks)."""

    def __init__(self, module: VisionLanguageModel, processor: Any, prompt: Any, rows: Rows, mesh: Mesh,
                 batch_size: int, site: Site, vision_cls: bool, method: str, dropout: bool):
        self.module, self.processor, self.prompt, self.rows, self.mesh = module, processor, prompt, rows, mesh
        self.batch_size, self.site, self.vision_cls, self.method, self.dropout = (batch_size, site, vision_cls,
                                                                                   method, dropout)
        self._jitted_sums = jax.jit(self._sums)

    def batch(self, rows: Sequence[int]) -> VisionBatch:
        padded_rows, weights = padded(rows, self.mesh.shape[DATA_AXIS], self.batch_size)
        inputs = self.processor.encode(self.prompt, self.rows.images(padded_rows))
        return place(self.mesh, VisionBatch(inputs, np.asarray(self.rows.labels(padded_rows), np.int32),
                                            np.asarray(weights, np.float32)))

    def logits(self, trainable: Any, frozen: Any, batch: VisionBatch, key: jax.Array | None) -> jax.Array:
        if self.method == "full":
            variables = {"params": {"vision": trainable["vision"]}}
        else:
            variables = {"params": {"vision": frozen["vision"]}, LORA: join_lora(trainable["lora"],
                                                                                 frozen["constants"])}
        rngs = {LORA_DROPOUT: key} if key is not None and self.dropout and self.method == "lora" else None
        _, state = self.module.apply(variables, batch.inputs, mutable=["intermediates"], rngs=rngs)
        last = flatten_sown(state["intermediates"])[SOURCE][-1]  # the last block's [B, N, D]
        pooled = pool(self.site, last, batch.inputs.image_mask, batch.inputs.last_index, self.vision_cls)
        head = trainable["head"]
        return standardise(pooled) @ head["kernel"] + head["bias"]

    def _weighted_ce(self, logits: jax.Array, batch: VisionBatch) -> jax.Array:
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        return -jnp.take_along_axis(log_probs, batch.labels[:, None], axis=-1)[:, 0] * batch.weights

    def loss(self, trainable: Any, frozen: Any, batch: VisionBatch, key: jax.Array) -> jax.Array:
        ce = self._weighted_ce(self.logits(trainable, frozen, batch, key), batch)
        return ce.sum() / jnp.maximum(batch.weights.sum(), 1.0)

    def _sums(self, trainable: Any, frozen: Any, batch: VisionBatch) -> jax.Array:
        logits = self.logits(trainable, frozen, batch, None)
        correct = ((jnp.argmax(logits, -1) == batch.labels) * batch.weights).sum()
        return jnp.stack([self._weighted_ce(logits, batch).sum(), batch.weights.sum(), correct,
                          batch.weights.sum()])

    def evaluate(self, trainable: Any, frozen: Any, rows: Sequence[int]) -> dict[str, float]:
        return evaluate_in_batches(lambda batch: self._jitted_sums(trainable, frozen, batch), self.batch, rows,
                                   self.rows.sizes, self.batch_size)


@dataclasses.dataclass(frozen=True)
class VisionRun:
    progress: Progress
    accuracy: dict[str, float]  # split -> accuracy of the kept weights (test: the reference)
    loss: dict[str, float]


def _trainable(loaded: Any, settings: VisionSettings, mesh: Mesh, classes: int) -> tuple[dict, dict]:
    """(trainable, frozen) trees of the chosen method; the head starts at zero."""
    width = loaded.config.vision.hidden_size
    head = {"kernel": jnp.zeros((width, classes), jnp.float32), "bias": jnp.zeros((classes,), jnp.float32)}
    head = jax.device_put(head, replicated(mesh, head))
    vision = loaded.params["vision"]
    if settings.method == "full":
        return {"vision": jax.tree.map(lambda a: a.astype(jnp.float32), vision), "head": head}, {}
    lora = init_lora(jax.random.key(settings.schedule.seed), loaded.params, settings.lora)
    lora = jax.device_put(lora, lora_shardings(mesh, loaded.family.sharding_rules(loaded.config), loaded.params,
                                               lora))
    trainable, constants = split_lora(lora)
    return {"lora": trainable, "head": head}, {"vision": vision, "constants": constants}


def train_vision(loaded: Any, processor: Any, rows: Rows, question: str, settings: VisionSettings, mesh: Mesh,
                 directory: Path, fingerprint: str, log: Callable[[str], None] = print) -> VisionRun:
    """Train the baseline on ``train`` (early stopping on ``val``) and score the kept weights on every split."""
    config = loaded.config
    depth = config.vision.depth
    module = VisionLanguageModel(config, RunPlan(depth, 0, logits=False, connector=False), jnp.dtype(loaded.dtype))
    site = Site(f"vision.{layer_name(depth - 1, depth)}", SOURCE, depth - 1, MEAN_PATCHES, config.vision.hidden_size)
    task = VisionTask(module, processor, processor.prompt(rows.class_names, question), rows, mesh,
                      settings.schedule.batch_size, site, loaded.site_layout.vision_cls, settings.method,
                      settings.lora.dropout > 0)
    trainable, frozen = _trainable(loaded, settings, mesh, len(rows.class_names))
    best, progress = train(task, frozen, trainable, rows.of("train"), rows.sizes, rows.of("val"), settings.schedule,
                           directory, fingerprint, log)
    scores = {split: task.evaluate(best, frozen, rows.of(split)) for split in ("train", "val", "test")}
    return VisionRun(progress, {split: s["accuracy"] for split, s in scores.items()},
                     {split: s["loss"] for split, s in scores.items()})
