"""LoRA SFT of the whole MLLM on answer tokens: only the adapter is trained, the params are never changed.

The loss is the cross-entropy of the answer's tokens (letter, optionally class name, end of turn) given the
extraction prompt and the image, averaged over real target tokens; prompt tokens and padding rows carry no
loss. Accuracy on ``val`` is read the way extraction reads the zero-shot answer: the option letter with the
highest logit at the prompt's last position.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from jaxprobe.finetune.examples import AnswerTargets, SFTBatch, answer_targets, sft_batch
from jaxprobe.finetune.loop import Progress, evaluate_in_batches, place, train
from jaxprobe.finetune.lora import LoraSpec, init_lora, join_lora, lora_shardings, split_lora
from jaxprobe.finetune.rows import Rows, padded
from jaxprobe.finetune.settings import Schedule
from jaxprobe.models.config import RunPlan
from jaxprobe.models.layers import LORA, LORA_DROPOUT
from jaxprobe.models.vlm import VisionLanguageModel
from jaxprobe.parallel import DATA_AXIS


def token_cross_entropy(logits: jax.Array, target_ids: jax.Array) -> jax.Array:
    """[B, K] cross-entropy of each target token, in float32."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(log_probs, target_ids[..., None], axis=-1)[..., 0]


class SFTTask:
    """The ``loop.Task`` of answer-token SFT (holds no arrays: params and adapter are arguments)."""

    def __init__(self, module: VisionLanguageModel, processor: Any, targets: AnswerTargets, rows: Rows, mesh: Mesh,
                 batch_size: int, dropout: bool):
        self.module, self.processor, self.targets, self.rows = module, processor, targets, rows
        self.mesh, self.batch_size, self.dropout = mesh, batch_size, dropout
        self._jitted_sums = jax.jit(self._sums)

    def batch(self, rows: Sequence[int]) -> SFTBatch:
        padded_rows, weights = padded(rows, self.mesh.shape[DATA_AXIS], self.batch_size)
        return place(self.mesh, sft_batch(self.processor, self.targets, self.rows.images(padded_rows),
                                          self.rows.labels(padded_rows), weights))

    def logits(self, trainable: Any, frozen: Any, batch: SFTBatch, key: jax.Array | None) -> jax.Array:
        variables = {"params": frozen["params"], LORA: join_lora(trainable, frozen["constants"])}
        rngs = {LORA_DROPOUT: key} if key is not None and self.dropout else None
        return self.module.apply(variables, batch.inputs, batch.target_index, method=self.module.logits_at,
                                 rngs=rngs)

    def loss(self, trainable: Any, frozen: Any, batch: SFTBatch, key: jax.Array) -> jax.Array:
        per_token = token_cross_entropy(self.logits(trainable, frozen, batch, key), batch.target_ids)
        weights = batch.target_mask * batch.weights[:, None]
        return (per_token * weights).sum() / jnp.maximum(weights.sum(), 1.0)

    def _sums(self, trainable: Any, frozen: Any, batch: SFTBatch) -> jax.Array:
        """[loss sum, target tokens, correct answers, rows] of one batch (padding rows weigh 0)."""
        logits = self.logits(trainable, frozen, batch, None)
        weights = batch.target_mask * batch.weights[:, None]
        option_ids = jnp.asarray(self.targets.prompt.option_token_ids)
        predicted = jnp.argmax(logits[:, 0, option_ids], axis=-1)
        correct = ((predicted == batch.labels) * batch.weights).sum()
        return jnp.stack([(token_cross_entropy(logits, batch.target_ids) * weights).sum(), weights.sum(), correct,
                          batch.weights.sum()])

    def evaluate(self, trainable: Any, frozen: Any, rows: Sequence[int]) -> dict[str, float]:
        return evaluate_in_batches(lambda batch: self._jitted_sums(trainable, frozen, batch), self.batch, rows,
                                   self.rows.sizes, self.batch_size)


@dataclasses.dataclass(frozen=True)
class LoraRun:
    """A finished LoRA SFT: the kept adapter, the run's record and accuracies before and after."""

    lora: dict[str, Any]
    progress: Progress
    targets: AnswerTargets
    before: dict[str, dict[str, float]]  # split -> {"accuracy", "loss"} with the fresh adapter (= the base model)
    after: dict[str, dict[str, float]]  # split -> the same with the kept adapter


@dataclasses.dataclass(frozen=True)
class LoraSetup:
    """Everything a LoRA SFT run trains with: the task, the fresh adapter's factors and the frozen trees."""

    task: SFTTask
    trainable: Any  # A and B of every adapter (sharded like the kernels)
    frozen: Any  # {"params": the base params, "constants": scale and dropout of every adapter}


def prepare_lora(loaded: Any, processor: Any, rows: Rows, question: str, spec: LoraSpec, schedule: Schedule,
                 answer_form: str, eos: Sequence[int], remat: bool, mesh: Mesh) -> LoraSetup:
    """The SFT task (prompts and targets as extraction builds them) and a fresh adapter placed on ``mesh``."""
    config = dataclasses.replace(loaded.config, remat=remat)
    module = VisionLanguageModel(config, RunPlan.full(config), jnp.dtype(loaded.dtype))
    prompt = processor.prompt(rows.class_names, question)
    targets = answer_targets(processor, prompt, rows.class_names, answer_form, eos,
                             rows.images(rows.of("train")[:1])[0])
    lora = init_lora(jax.random.key(schedule.seed), loaded.params, spec)
    lora = jax.device_put(lora, lora_shardings(mesh, loaded.family.sharding_rules(config), loaded.params, lora))
    trainable, constants = split_lora(lora)
    task = SFTTask(module, processor, targets, rows, mesh, schedule.batch_size, spec.dropout > 0)
    return LoraSetup(task, trainable, {"params": loaded.params, "constants": constants})


def train_lora(setup: LoraSetup, schedule: Schedule, directory: Path, fingerprint: str,
               log: Callable[[str], None] = print) -> LoraRun:
    """Train the adapter on the ``train`` rows (early stopping on ``val``) and score it before and after on both;
    no ``test`` row is read."""
    task, frozen = setup.task, setup.frozen
    splits = {name: task.rows.of(name) for name in ("train", "val")}
    before = {name: task.evaluate(setup.trainable, frozen, split_rows) for name, split_rows in splits.items()}
    best, progress = train(task, frozen, setup.trainable, splits["train"], task.rows.sizes, splits["val"], schedule,
                           directory, fingerprint, log)
    after = {name: task.evaluate(best, frozen, split_rows) for name, split_rows in splits.items()}
    return LoraRun(join_lora(best, frozen["constants"]), progress, task.targets, before, after)
