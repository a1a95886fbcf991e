"""A seeded, resumable training loop shared by LoRA SFT and the vision-tower baseline.

Only the ``trainable`` tree has gradients and optimizer state (AdamW with linear warmup and cosine decay,
gradients clipped by global norm, ``optax.MultiSteps`` accumulating micro-batches); the ``frozen`` tree (the
params) is an argument of the jitted step, never donated or changed. Batches and dropout keys are functions of
``(seed, micro-step)``, and the whole state (weights, optimizer, early-stopping record, history) is saved with
orbax at every evaluation, every ``save_every`` optimizer steps and at the end, so a run killed at any moment
and started again continues from its last save and ends with the same weights as an uninterrupted run.
Evaluations on ``val`` keep the best weights (``monitor``) and stop after ``patience`` evaluations without
improvement; evaluations before training are recorded but never chosen.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxprobe.errors import ConfigError
from jaxprobe.finetune.rows import Size, batches_per_epoch, epoch_batches, eval_batches
from jaxprobe.finetune.settings import Schedule
from jaxprobe.parallel import batch_sharding

KEEP_CHECKPOINTS = 2


class Task(Protocol):
    def batch(self, rows: Sequence[int]) -> Any:
        """The placed training batch of these rows."""
        ...

    def loss(self, trainable: Any, frozen: Any, batch: Any, key: jax.Array) -> jax.Array:
        """Mean loss of one batch (pure: jitted by the loop)."""
        ...

    def evaluate(self, trainable: Any, frozen: Any, rows: Sequence[int]) -> dict[str, float]:
        """{"accuracy", "loss"} on these rows (no dropout)."""
        ...


@dataclasses.dataclass
class Progress:
    """Where a run stands; JSON-serialisable, saved with every checkpoint."""

    micro: int = 0  # micro-batches done
    losses: list[float] = dataclasses.field(default_factory=list)  # per micro-batch
    evaluations: list[dict] = dataclasses.field(default_factory=list)  # {"step", "epoch", "accuracy", "loss"}
    best: dict | None = None  # the evaluation whose weights are kept
    bad_evals: int = 0
    stopped_early: bool = False
    done: bool = False


@dataclasses.dataclass(frozen=True)
class Plan:
    """The run's shape: how many micro-batches, and where evaluations and saves fall."""

    per_epoch: int
    schedule: Schedule

    @property
    def total_micro(self) -> int:
        return self.schedule.epochs * self.per_epoch

    @property
    def total_steps(self) -> int:
        return math.ceil(self.total_micro / self.schedule.grad_accum)

    def evaluates_after(self, done: int) -> bool:
        every = self.schedule.eval_every * self.schedule.grad_accum or self.per_epoch
        return done % every == 0 or done == self.total_micro

    def saves_after(self, done: int) -> bool:
        return done % (self.schedule.save_every * self.schedule.grad_accum) == 0 or self.evaluates_after(done)


def place(mesh: Mesh, tree: Any) -> Any:
    """A numpy batch split over the mesh's ``data`` axis (its rows are already a multiple of it)."""
    return jax.tree.map(lambda a: jax.device_put(np.asarray(a), batch_sharding(mesh, np.ndim(a))), tree)


def evaluate_in_batches(sums: Callable[[Any], jax.Array], make_batch: Callable[[list[int]], Any],
                        rows: Sequence[int], sizes: Sequence[Size], batch_size: int) -> dict[str, float]:
    """{"accuracy", "loss"} over ``rows`` from per-batch sums [loss sum, loss count, correct, rows]."""
    total = np.zeros(4)
    for batch_rows in eval_batches(rows, sizes, batch_size):
        total += np.asarray(sums(make_batch(batch_rows)), np.float64)
    return {"accuracy": float(total[2] / total[3]), "loss": float(total[0] / total[1])}


def optimizer(schedule: Schedule, total_steps: int) -> optax.GradientTransformation:
    warmup = round(schedule.warmup_ratio * total_steps)
    rate = optax.warmup_cosine_decay_schedule(0.0, schedule.learning_rate, warmup, max(total_steps, warmup + 1))
    inner = optax.chain(optax.clip_by_global_norm(schedule.max_grad_norm),
                        optax.adamw(rate, weight_decay=schedule.weight_decay))
    return optax.MultiSteps(inner, every_k_schedule=schedule.grad_accum)


def better(metrics: dict[str, float], best: dict | None, monitor: str) -> bool:
    """Does ``metrics`` beat the kept evaluation? Accuracy first (ties: lower loss), loss alone, or "last": every
    evaluation replaces the kept weights (no selection on val, no early stopping)."""
    if best is None or monitor == "last":
        return True
    if monitor == "loss":
        return metrics["loss"] < best["loss"]
    return (metrics["accuracy"], -metrics["loss"]) > (best["accuracy"], -best["loss"])


class Checkpoints:
    """Orbax checkpoints of one run (atomic: orbax finalises a step only once it is completely written)."""

    def __init__(self, directory: Path, fingerprint: str):
        import orbax.checkpoint as ocp

        self.fingerprint = fingerprint
        self.manager = ocp.CheckpointManager(directory.absolute(), options=ocp.CheckpointManagerOptions(
            max_to_keep=KEEP_CHECKPOINTS, create=True))

    def save(self, state: dict[str, Any], progress: Progress) -> None:
        import orbax.checkpoint as ocp

        meta = {"fingerprint": self.fingerprint, **dataclasses.asdict(progress)}
        self.manager.save(progress.micro, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                                  meta=ocp.args.JsonSave(meta)), force=True)
        self.manager.wait_until_finished()

    def restore(self, like: dict[str, Any]) -> tuple[dict[str, Any], Progress] | None:
        """The latest saved state (placed like ``like``), or None; checkpoints of other settings are refused."""
        import orbax.checkpoint as ocp

        step = self.manager.latest_step()
        if step is None:
            return None
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        if meta.get("fingerprint") != self.fingerprint:
            raise ConfigError(f"{self.manager.directory} holds a fine-tuning run of other settings (fingerprint "
                              f"{meta.get('fingerprint')} vs {self.fingerprint}); restore those settings to resume "
                              "it, or use another work directory")
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), like)
        state = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        fields = {field.name for field in dataclasses.fields(Progress)}
        placed = jax.tree.map(lambda value, model: jax.device_put(value, model.sharding), state["state"], like)
        return placed, Progress(**{key: value for key, value in meta.items() if key in fields})


def _copy(tree: Any) -> Any:
    return jax.tree.map(jnp.copy, tree)


def _on_devices_of(tree: Any, reference: jax.Array) -> Any:
    """Leaves placed elsewhere than ``reference`` (e.g. the optimizer's step counters) replicated over its devices,
    so every leaf of the state lives on one mesh (as saved, and as restored)."""
    sharding = reference.sharding
    if not isinstance(sharding, NamedSharding):
        return tree
    replicated = NamedSharding(sharding.mesh, PartitionSpec())
    return jax.tree.map(lambda leaf: leaf if leaf.sharding.device_set == sharding.device_set
                        else jax.device_put(leaf, replicated), tree)


@functools.partial(jax.jit, static_argnames=("task", "schedule", "total_steps"), donate_argnums=(0, 1))
def _update(trainable: Any, opt_state: Any, frozen: Any, batch: Any, key: jax.Array, task: Task, schedule: Schedule,
            total_steps: int) -> tuple[Any, Any, jax.Array]:
    """One micro-batch: gradients of the trainable tree only, accumulated and applied by the optimizer (compiled
    once per task and schedule, so a resumed run in the same process reuses the compilation)."""
    loss, grads = jax.value_and_grad(task.loss)(trainable, frozen, batch, key)
    updates, opt_state = optimizer(schedule, total_steps).update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, loss


def train(task: Task, frozen: Any, trainable: Any, rows: Sequence[int], sizes: Sequence[Size], val_rows: Sequence[int],
          schedule: Schedule, directory: Path, fingerprint: str,
          log: Callable[[str], None] = print) -> tuple[Any, Progress]:
    """Train ``trainable`` on ``rows`` and return the weights of the best evaluation on ``val_rows``."""
    plan = Plan(batches_per_epoch(rows, sizes, schedule.batch_size), schedule)
    tx = optimizer(schedule, plan.total_steps)
    state = {"trainable": _copy(trainable), "opt_state": jax.jit(tx.init)(trainable), "best": _copy(trainable)}
    state = _on_devices_of(state, jax.tree.leaves(trainable)[0])
    checkpoints = Checkpoints(directory, fingerprint)
    restored = checkpoints.restore(state)
    state, progress = restored if restored is not None else (state, Progress())
    if progress.done:
        log(f"{directory.name}: training already finished ({progress.micro} micro-batches); reusing it")
        return state["best"], progress

    base_key = jax.random.key(schedule.seed)
    if not progress.evaluations:
        progress.evaluations.append({"step": 0, "epoch": 0, **task.evaluate(state["trainable"], frozen, val_rows)})
    log(f"{directory.name}: {plan.total_micro} micro-batches ({plan.total_steps} optimizer steps), "
        f"from {progress.micro}")
    while progress.micro < plan.total_micro and not progress.stopped_early:
        epoch, position = divmod(progress.micro, plan.per_epoch)
        batch_rows = epoch_batches(rows, sizes, schedule.batch_size, schedule.seed, epoch)[position]
        trainable, opt_state, loss = _update(state["trainable"], state["opt_state"], frozen, task.batch(batch_rows),
                                             jax.random.fold_in(base_key, progress.micro), task, schedule,
                                             plan.total_steps)
        state = {**state, "trainable": trainable, "opt_state": opt_state}
        progress.micro += 1
        progress.losses.append(float(loss))
        if plan.evaluates_after(progress.micro):
            state = _evaluate(task, frozen, state, progress, val_rows, plan, log)
        if plan.saves_after(progress.micro) or progress.stopped_early:
            progress.done = progress.micro == plan.total_micro or progress.stopped_early
            checkpoints.save(state, progress)
    if not progress.done:  # nothing left to run (e.g. zero rows after a resume): record the end
        progress.done = True
        checkpoints.save(state, progress)
    return state["best"], progress


def _evaluate(task: Task, frozen: Any, state: dict, progress: Progress, val_rows: Sequence[int], plan: Plan,
              log: Callable[[str], None]) -> dict:
    """Evaluate on val, keep the weights if they are the best so far, and decide on early stopping."""
    steps = math.ceil(progress.micro / plan.schedule.grad_accum)
    metrics = task.evaluate(state["trainable"], frozen, val_rows)
    record = {"step": steps, "epoch": progress.micro / plan.per_epoch, **metrics}
    progress.evaluations.append(record)
    log(f"  step {steps}/{plan.total_steps}: train loss {progress.losses[-1]:.4f}, val accuracy "
        f"{metrics['accuracy']:.3f}, val loss {metrics['loss']:.4f}")
    if better(metrics, progress.best, plan.schedule.monitor):
        progress.best, progress.bad_evals = record, 0
        return {**state, "best": _copy(state["trainable"])}
    progress.bad_evals += 1
    if plan.schedule.patience and progress.bad_evals >= plan.schedule.patience:
        progress.stopped_early = True
        log(f"  stopping early: no better val {plan.schedule.monitor} for {progress.bad_evals} evaluations")
    return state
