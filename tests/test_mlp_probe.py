"""The study's MLP protocol in lockstep vs a plain PyTorch implementation of the same protocol.

The PyTorch reference is what a study author would write: nn.Sequential, AdamW, a LambdaLR warmup + cosine
schedule, a shuffled DataLoader with batches of 4, 20 epochs.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
import torch
from jax.sharding import Mesh
from sklearn.datasets import load_digits

from jaxprobe.probes import mlp
from jaxprobe.probes.mlp import MlpProtocol, fit_mlp_probes

SEEDS = 5
TRAIN_ROWS = 300
CLASSES = 10
TINY = MlpProtocol(hidden_size=16, epochs=2)  # the protocol with a small net and few epochs, for exactness tests


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sklearn digits (64 features, 10 classes), shuffled, standardised with train statistics."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order].astype(np.float32), y[order].astype(np.int32)
    mean, std = x[:TRAIN_ROWS].mean(0), x[:TRAIN_ROWS].std(0) + 1e-6
    x = (x - mean) / std
    return x[:TRAIN_ROWS], y[:TRAIN_ROWS], x[TRAIN_ROWS:], y[TRAIN_ROWS:]


def torch_mlp(width: int, protocol: MlpProtocol) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Linear(width, protocol.hidden_size), torch.nn.ReLU(),
                               torch.nn.Dropout(protocol.dropout), torch.nn.Linear(protocol.hidden_size, CLASSES))


def torch_train(model, batches, steps_per_epoch: int, protocol: MlpProtocol) -> None:
    """AdamW + LambdaLR(linear warmup, cosine) over ``batches(epoch)``, as with transformers' cosine schedule."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=protocol.learning_rate, weight_decay=protocol.weight_decay)
    total = protocol.epochs * steps_per_epoch
    warmup = math.ceil(protocol.warmup_ratio * total)

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    model.train()
    for epoch in range(protocol.epochs):
        for xb, yb in batches(epoch):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
            scheduler.step()


def torch_probs(model, x_eval: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(x_eval)), -1).numpy()


def torch_protocol(x_train, y_train, x_eval, seed: int, protocol: MlpProtocol) -> np.ndarray:
    torch.manual_seed(seed)
    model = torch_mlp(x_train.shape[1], protocol)
    data = torch.utils.data.TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train).long())
    loader = torch.utils.data.DataLoader(data, batch_size=protocol.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    torch_train(model, lambda epoch: loader, len(loader), protocol)
    return torch_probs(model, x_eval)


def stacked(p: int, *arrays: np.ndarray) -> list[np.ndarray]:
    return [np.ascontiguousarray(np.broadcast_to(a, (p, *a.shape))) for a in arrays]


def test_matches_pytorch_protocol_over_seeds(digits):
    """Default protocol (hidden 256, lr 1e-4, 20 epochs): mean test accuracy over 5 seeds within 2 points."""
    x_train, y_train, x_test, y_test = digits
    protocol = MlpProtocol()
    torch.set_num_threads(1)
    torch_acc = np.array([(torch_protocol(x_train, y_train, x_test, s, protocol).argmax(-1) == y_test).mean()
                          for s in range(SEEDS)])
    xs, ys, xe = stacked(SEEDS, x_train, y_train, x_test)
    probs = fit_mlp_probes(xs, ys, np.ones(ys.shape, bool), xe, CLASSES, jax.random.split(jax.random.key(0), SEEDS),
                           protocol)
    jax_acc = (probs.argmax(-1) == y_test).mean(-1)
    print(f"torch {np.round(torch_acc, 4)} mean {torch_acc.mean():.4f}; jax {np.round(jax_acc, 4)} "
          f"mean {jax_acc.mean():.4f}")
    assert min(torch_acc.mean(), jax_acc.mean()) > 0.6  # chance is 0.1: the comparison means something
    assert abs(jax_acc.mean() - torch_acc.mean()) <= 0.02


def test_step_for_step_parity_with_pytorch(digits):
    """Same init, same shuffles, no dropout: the PyTorch loop reproduces our probabilities to float precision.

    50 rows give a short last batch (50 = 12 x 4 + 2), which PyTorch's DataLoader keeps.
    """
    x_train, y_train, x_test, _ = digits
    x_train, y_train, protocol = x_train[:50], y_train[:50], MlpProtocol(hidden_size=32, dropout=0.0, epochs=3)
    key = jax.random.key(7)
    init_key, order_key, _ = mlp.probe_streams(key)
    params = {k: torch.from_numpy(np.array(v).T.copy()) for k, v in
              mlp.init_mlp(init_key, x_train.shape[1], protocol.hidden_size, CLASSES).items()}
    model = torch_mlp(x_train.shape[1], protocol)
    with torch.no_grad():
        for layer, name in ((model[0], "1"), (model[3], "2")):
            layer.weight.copy_(params[f"w{name}"])
            layer.bias.copy_(params[f"b{name}"])
    xt, yt = torch.from_numpy(x_train.copy()), torch.from_numpy(y_train.copy()).long()
    mask = np.ones(len(y_train), bool)

    def batches(epoch: int):
        order = np.array(mlp.epoch_order(jax.random.fold_in(order_key, epoch), mask))
        return [(xt[order[i:i + 4]], yt[order[i:i + 4]]) for i in range(0, len(order), protocol.batch_size)]

    torch_train(model, batches, math.ceil(len(y_train) / protocol.batch_size), protocol)
    ours = fit_mlp_probes(x_train[None], y_train[None], mask[None], x_test[None], CLASSES, key[None], protocol)[0]
    np.testing.assert_allclose(ours, torch_probs(model, x_test), atol=1e-5)


def garbage_padded(x: np.ndarray, y: np.ndarray, extra: int, seed: int) -> tuple[np.ndarray, ...]:
    """Insert ``extra`` masked-out rows at random places: huge, NaN and inf features, out-of-range labels."""
    rng = np.random.default_rng(seed)
    where = np.sort(rng.choice(len(y) + extra, extra, replace=False))
    mask = np.ones(len(y) + extra, bool)
    mask[where] = False
    x_pad = rng.normal(scale=1e3, size=(len(mask), x.shape[1])).astype(np.float32)
    x_pad[where[::3]], x_pad[where[1::3], 0] = np.nan, np.inf
    y_pad = rng.integers(-5, CLASSES + 5, len(mask)).astype(np.int32)
    x_pad[mask], y_pad[mask] = x, y
    return x_pad, y_pad, mask


def test_padded_rows_have_no_influence(digits):
    x_train, y_train, x_test, _ = digits
    x, y, x_eval = x_train[:41], y_train[:41], x_test[:20]
    key = jax.random.key(3)[None]
    plain = fit_mlp_probes(x[None], y[None], np.ones((1, 41), bool), x_eval[None], CLASSES, key, TINY)
    x_pad, y_pad, mask = garbage_padded(x, y, 19, seed=1)
    padded = fit_mlp_probes(x_pad[None], y_pad[None], mask[None], x_eval[None], CLASSES, key, TINY)
    np.testing.assert_allclose(padded, plain, atol=1e-6)


def probe_stack(digits, sizes: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Probes with different training-set sizes (different folds), padded to the largest, with one eval set."""
    x_train, y_train, x_test, _ = digits
    rows = max(sizes)
    x = np.stack([x_train[i * 7: i * 7 + rows] for i in range(len(sizes))])
    y = np.stack([y_train[i * 7: i * 7 + rows] for i in range(len(sizes))])
    mask = np.arange(rows)[None] < np.array(sizes)[:, None]
    return x, y, mask, np.stack([x_test[:20]] * len(sizes))


def test_lockstep_equals_each_probe_alone(digits):
    sizes = (29, 41, 41)  # two alone-shapes: each is a compile
    x, y, mask, x_eval = probe_stack(digits, sizes)
    keys = jax.random.split(jax.random.key(11), len(sizes))
    together = fit_mlp_probes(x, y, mask, x_eval, CLASSES, keys, TINY)
    for p, n in enumerate(sizes):
        alone = fit_mlp_probes(x[p:p + 1, :n], y[p:p + 1, :n], mask[p:p + 1, :n], x_eval[p:p + 1], CLASSES,
                               keys[p:p + 1], TINY)
        np.testing.assert_allclose(together[p:p + 1], alone, atol=1e-5)


def test_one_and_eight_devices_agree(digits):
    assert len(jax.devices()) >= 8, "conftest forces 8 CPU devices"
    sizes = (29, 41, 36, 40, 33)  # 5 probes: padded up to the device count
    x, y, mask, x_eval = probe_stack(digits, sizes)
    keys = jax.random.split(jax.random.key(5), len(sizes))
    results = [fit_mlp_probes(x, y, mask, x_eval, CLASSES, keys, TINY, mesh=Mesh(np.array(jax.devices()[:k]),
                                                                                 ("probe",)))
               for k in (1, 8)]
    assert results[0].shape == (len(sizes), 20, CLASSES)
    np.testing.assert_allclose(results[1], results[0], atol=1e-5)
