"""The extraction loop: one shape per batch, and kill-and-resume equals an uninterrupted run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from jaxprobe.capture.loop import extract_into, same_bucket_batches
from jaxprobe.features import FeatureStore, FeatureStoreWriter

N = 23
BUCKETS = [(1, 4, 4)] * 9 + [(1, 4, 6)] * 14  # two image grids, rows already ordered by bucket


def test_batches_never_mix_buckets():
    batches = list(same_bucket_batches(list(range(N)), BUCKETS, 4))
    assert [len(b) for b in batches] == [4, 4, 1, 4, 4, 4, 2]
    assert all(len({BUCKETS[r] for r in batch}) == 1 for batch in batches)


class SimulatedCrashError(Exception):
    pass


def _forward_factory(calls: list[int], die_at: int | None = None):
    """A real jitted computation standing in for the model: per-row features from a fixed random projection."""
    projection = jax.random.normal(jax.random.key(0), (3, 5))

    @jax.jit
    def compute(inputs):
        return {"vision.layer_00": jnp.tanh(inputs @ projection), "connector.output": inputs.sum(-1, keepdims=True)}

    def forward(batch):
        calls.append(len(batch))
        if die_at is not None and len(calls) == die_at:
            raise SimulatedCrashError
        inputs = jnp.asarray(np.array([[r, r * 0.5, -r] for r in batch], np.float32))
        answers = pd.DataFrame({"answer_pred": [r % 2 for r in batch], "answer_prob": [0.5 + r / 100 for r in batch]})
        return {k: np.asarray(v) for k, v in compute(inputs).items()}, answers

    return forward


def _writer(path):
    index = pd.DataFrame({"row": range(N), "id": [f"i{r}" for r in range(N)], "label": [r % 2 for r in range(N)],
                          "split": "train", "group": "g"})
    return FeatureStoreWriter(path, index, ["a", "b"], {"vision.layer_00": 5, "connector.output": 1}, "fp")


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    rows = list(range(N))
    with pytest.raises(SimulatedCrashError):
        extract_into(_writer(tmp_path / "a"), rows, BUCKETS, _forward_factory([], die_at=4), 4, 8, progress=False)
    calls: list[int] = []
    written = extract_into(_writer(tmp_path / "a"), rows, BUCKETS, _forward_factory(calls), 4, 8, progress=False)
    assert written == N - 8 and sum(calls) == N - 8  # the first chunk was kept, nothing recomputed twice
    extract_into(_writer(tmp_path / "b"), rows, BUCKETS, _forward_factory([]), 4, 8, progress=False)
    resumed, fresh = FeatureStore.open(tmp_path / "a"), FeatureStore.open(tmp_path / "b")
    for site in fresh.sites:
        np.testing.assert_array_equal(resumed.load(site), fresh.load(site))
    pd.testing.assert_frame_equal(resumed.index, fresh.index)
    assert resumed.index.answer_prob.tolist() == pytest.approx([0.5 + r / 100 for r in rows])
