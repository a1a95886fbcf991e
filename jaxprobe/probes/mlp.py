"""The study's MLP probe protocol, with thousands of MLPs trained in lockstep in one jitted call.

PAPER.md's protocol: a two-layer MLP (ReLU, dropout 0.1) trained with AdamW at lr 1e-4 under a cosine schedule
with 5% linear warmup, 20 epochs, batch size 4. The study trained one probe at a time in PyTorch; here every
probe (sites x seeds x folds, stacked on a leading P axis) runs the same step at the same time, so the tiny
per-step work of one probe ([4, D] @ [D, H]) is batched across probes.

What a PyTorch user of the protocol gets, we reproduce per probe: ``nn.Linear`` initialisation, a fresh shuffle
of the probe's own training rows each epoch, batches of 4 with a smaller last batch (``drop_last=False``), and
a schedule whose length is ``epochs * ceil(n_train / batch_size)`` steps with ``ceil(0.05 * total)`` warmup steps
(as ``transformers.get_cosine_schedule_with_warmup`` is used with a warmup ratio). Probes with fewer rows than
the largest take the lockstep's extra steps as no-ops: parameters, optimizer state and schedule stay put.

Execution: probes are sharded over the mesh's ``probe`` axis with ``shard_map`` (they never talk to each other),
and on each device run in chunks of ``probe_chunk`` probes, one chunk after the other. On a CPU this keeps a
chunk's weights and AdamW moments in cache for all of its steps instead of streaming every probe's state from
memory at every step; on an accelerator a larger chunk fills the device. Chunking never changes results.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxprobe.parallel import PROBE_AXIS, pad_to_multiple

Params = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class MlpProtocol:
    """The study's probe protocol (PAPER.md, "Probing protocol (reported)"); defaults are the study's values.

    ``hidden_size`` is not reported by the study, so 256 is our choice. ``weight_decay`` is not reported either:
    0.01 is ``torch.optim.AdamW``'s default, which is what an unconfigured PyTorch AdamW uses. ``betas`` and
    ``eps`` are likewise the PyTorch (and optax) AdamW defaults. ``probe_chunk`` is an execution setting only
    (probes per device trained together); it changes speed, never results. 2 suits a CPU: a probe's weights,
    gradients and AdamW moments take ~5 MB at D=1280, H=256, so two probes stay in a 32 MB L3 cache across steps
    (measured: ~2x faster per probe step than chunks of 8). On an accelerator, raise it to fill the device.
    """

    hidden_size: int = 256
    dropout: float = 0.1
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_ratio: float = 0.05
    epochs: int = 20
    batch_size: int = 4
    probe_chunk: int = 2


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Static shape of the lockstep loop (Python ints, so they can be jit static arguments)."""

    steps_per_epoch: int  # of the probe with the most training rows
    chunk: int  # probes per device trained together
    num_classes: int


def schedule_lengths(n_valid: np.ndarray, protocol: MlpProtocol) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per probe: optimizer steps per epoch, total steps and warmup steps, computed as a PyTorch user would.

    Done on the host in float64 so ``ceil(warmup_ratio * total)`` rounds exactly like ``math.ceil`` does.
    """
    steps = np.array([math.ceil(int(n) / protocol.batch_size) for n in n_valid], np.int32)
    total = steps * protocol.epochs
    warmup = np.array([math.ceil(protocol.warmup_ratio * int(t)) for t in total], np.int32)
    return steps, total, warmup


def warmup_cosine(peak: float, warmup: jax.Array, total: jax.Array) -> optax.Schedule:
    """Linear 0 -> peak over ``warmup`` steps, then cosine to 0 at ``total`` (HF's cosine-with-warmup).

    optax's ``warmup_cosine_decay_schedule`` is the same curve but checks its step counts in Python, so it cannot
    take the per-probe (traced) lengths that probes with different training-set sizes need.
    """

    def schedule(count: jax.Array) -> jax.Array:
        count = count.astype(jnp.float32)
        rising = count / jnp.maximum(warmup, 1)
        progress = jnp.clip((count - warmup) / jnp.maximum(total - warmup, 1), 0.0, 1.0)
        return peak * jnp.where(count < warmup, rising, 0.5 * (1.0 + jnp.cos(jnp.pi * progress)))

    return schedule


def init_mlp(key: jax.Array, width: int, hidden: int, num_classes: int) -> Params:
    """``torch.nn.Linear``'s default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.

    The study's probes were PyTorch modules; at lr 1e-4 for 20 epochs the weights stay near their init, so the
    init distribution is part of the protocol.
    """
    keys = jax.random.split(key, 4)

    def uniform(k: jax.Array, shape: tuple[int, ...], fan_in: int) -> jax.Array:
        bound = 1.0 / math.sqrt(fan_in)
        return jax.random.uniform(k, shape, jnp.float32, -bound, bound)

    return {"w1": uniform(keys[0], (width, hidden), width), "b1": uniform(keys[1], (hidden,), width),
            "w2": uniform(keys[2], (hidden, num_classes), hidden), "b2": uniform(keys[3], (num_classes,), hidden)}


def mlp_logits(params: Params, x: jax.Array, keep: jax.Array | None = None) -> jax.Array:
    """Linear-ReLU-Dropout-Linear; ``keep`` is the inverted-dropout multiplier (None at eval time)."""
    hidden = jax.nn.relu(x @ params["w1"] + params["b1"])
    if keep is not None:
        hidden = hidden * keep
    return hidden @ params["w2"] + params["b2"]


def epoch_order(key: jax.Array, mask: jax.Array) -> jax.Array:
    """A fresh random order of the valid rows, followed by the padded rows.

    Each valid row's sort key is drawn from its rank among the valid rows, so the order of the valid rows does not
    depend on how many padded rows there are or where they sit.
    """
    rank = jnp.cumsum(mask) - 1
    bits = jax.vmap(lambda r: jax.random.bits(jax.random.fold_in(key, r), (), jnp.uint32))(rank)
    return jnp.lexsort((bits, ~mask))


def probe_streams(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A probe's init, shuffling and dropout keys; public so a reference implementation can replay them."""
    init_key, order_key, dropout_key = jax.random.split(key, 3)
    return init_key, order_key, dropout_key


def _train_probe(x, y, mask, steps, total, warmup, key, protocol: MlpProtocol, plan: _Plan) -> Params:
    """Train one probe for ``epochs`` x the lockstep's steps per epoch; steps past its own ``steps`` are no-ops."""
    init_key, order_key, dropout_key = probe_streams(key)
    params = init_mlp(init_key, x.shape[-1], protocol.hidden_size, plan.num_classes)
    optimizer = optax.adamw(warmup_cosine(protocol.learning_rate, warmup, total), *protocol.betas, protocol.eps,
                            weight_decay=protocol.weight_decay)
    n_valid, size = jnp.sum(mask), protocol.batch_size
    order_pad = jnp.zeros(max(0, plan.steps_per_epoch * size - x.shape[0]), jnp.int32)  # keeps slices in range

    def loss_fn(p: Params, xb, yb, weight, keep) -> jax.Array:
        losses = optax.softmax_cross_entropy_with_integer_labels(mlp_logits(p, xb, keep), yb)
        return jnp.sum(losses * weight) / jnp.maximum(jnp.sum(weight), 1.0)

    def step(carry, s, order, epoch_key):
        p, state = carry
        position = s * size + jnp.arange(size)
        rows = jax.lax.dynamic_slice(order, (s * size,), (size,))
        keep_prob = 1.0 - protocol.dropout
        keep = jax.random.bernoulli(jax.random.fold_in(epoch_key, s), keep_prob, (size, protocol.hidden_size))
        valid = position < n_valid  # padded rows are zeroed too: weight 0 x NaN garbage would still be NaN
        xb, yb = jnp.where(valid[:, None], x[rows], 0.0), jnp.where(valid, y[rows], 0)
        grads = jax.grad(loss_fn)(p, xb, yb, valid.astype(jnp.float32), keep.astype(jnp.float32) / keep_prob)
        updates, new_state = optimizer.update(grads, state, p)
        active = s < steps
        new = (optax.apply_updates(p, updates), new_state)
        return jax.tree.map(lambda n, o: jnp.where(active, n, o), new, carry), None

    def epoch(carry, e):
        order = jnp.concatenate([epoch_order(jax.random.fold_in(order_key, e), mask).astype(jnp.int32), order_pad])
        epoch_step = functools.partial(step, order=order, epoch_key=jax.random.fold_in(dropout_key, e))
        return jax.lax.scan(epoch_step, carry, jnp.arange(plan.steps_per_epoch))[0], None

    carry = (params, optimizer.init(params))
    return jax.lax.scan(epoch, carry, jnp.arange(protocol.epochs))[0][0]


def _fit_local(x, y, mask, steps, total, warmup, key_data, x_eval, protocol: MlpProtocol, plan: _Plan):
    """One device's probes: chunks of ``plan.chunk`` probes, each chunk vmapped, chunks one after the other."""

    def chunk(args):
        *train_args, key_chunk, x_eval_chunk = args
        keys = jax.random.wrap_key_data(key_chunk)
        train = functools.partial(_train_probe, protocol=protocol, plan=plan)
        params = jax.vmap(train)(*train_args, keys)
        return jax.nn.softmax(jax.vmap(mlp_logits)(params, x_eval_chunk), axis=-1)

    args = (x, y, mask, steps, total, warmup, key_data, x_eval)
    chunked = jax.tree.map(lambda a: a.reshape(-1, plan.chunk, *a.shape[1:]), args)
    probs = jax.lax.map(chunk, chunked)
    return probs.reshape(-1, *probs.shape[2:])


@functools.partial(jax.jit, static_argnames=("protocol", "plan", "mesh"))
def _fit(x, y, mask, steps, total, warmup, key_data, x_eval, protocol: MlpProtocol, plan: _Plan,
         mesh: Mesh | None):
    local = functools.partial(_fit_local, protocol=protocol, plan=plan)
    if mesh is None:
        return local(x, y, mask, steps, total, warmup, key_data, x_eval)
    # Probes never communicate, so there is no replication to check (and optax's step counts start unvarying).
    spec = PartitionSpec(PROBE_AXIS)
    sharded = jax.shard_map(local, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)
    return sharded(x, y, mask, steps, total, warmup, key_data, x_eval)


def _plan(train_mask: np.ndarray, num_classes: int, protocol: MlpProtocol, devices: int) -> _Plan:
    most_rows = int(train_mask.sum(axis=1).max())
    per_device = -(-train_mask.shape[0] // devices)
    return _Plan(math.ceil(most_rows / protocol.batch_size), max(1, min(protocol.probe_chunk, per_device)),
                 num_classes)


def fit_mlp_probes(x_train, y_train, train_mask, x_eval, num_classes: int, keys: jax.Array,
                   protocol: MlpProtocol = MlpProtocol(), mesh: Mesh | None = None) -> np.ndarray:
    """Train P MLP probes under the study's protocol in lockstep; eval class probabilities [P, M, C].

    x_train [P, N, D] float32 (standardised by the caller), y_train [P, N] int, train_mask [P, N] bool (rows
    with False are padding and have no influence at all), x_eval [P, M, D], keys [P] PRNG keys (each probe's
    init, shuffling and dropout derive from its key alone). With ``mesh``, probes are split over its ``probe``
    axis (P is padded to a multiple of devices x chunk and the padding stripped from the result).
    """
    train_mask = np.asarray(train_mask, bool)
    if not train_mask.any(axis=1).all():
        raise ValueError("every MLP probe needs at least one training row (a train_mask row is all False)")
    steps, total, warmup = schedule_lengths(train_mask.sum(axis=1), protocol)
    devices = 1 if mesh is None else mesh.shape[PROBE_AXIS]
    plan = _plan(train_mask, num_classes, protocol, devices)
    key_data = np.asarray(jax.random.key_data(keys) if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key) else keys)
    arrays = [np.asarray(x_train, np.float32), np.asarray(y_train, np.int32), train_mask, steps, total, warmup,
              key_data, np.asarray(x_eval, np.float32)]
    arrays = [pad_to_multiple(a, devices * plan.chunk) for a in arrays]
    if mesh is not None:
        sharding = NamedSharding(mesh, PartitionSpec(PROBE_AXIS))
        arrays = [jax.device_put(a, sharding) for a in arrays]
    probs = _fit(*arrays, protocol=protocol, plan=plan, mesh=mesh)
    return np.asarray(probs)[: train_mask.shape[0]]
