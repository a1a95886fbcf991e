"""The dataset rows a fine-tuning run reads, exactly as extraction would feed them, and their batches.

Rows, image sizes and the image loader are extraction's (``capture.extract.plan_rows``: the same split, the same
resolution and size buckets), so the fine-tuned model sees images as the probes will. A batch never mixes image
sizes (one compilation per bucket); training batches are reshuffled every epoch from ``(seed, epoch)`` alone, so a
resumed run replays exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Sequence

import numpy as np
import pandas as pd

from jaxprobe.errors import DatasetError

Size = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Rows:
    index: pd.DataFrame  # extraction's ordered index: row, id, label, split, group, ...
    sizes: list[Size]  # the (height, width) each row is fed at
    load: Callable[[int], np.ndarray]  # row -> uint8 RGB image at its size
    class_names: list[str]

    def of(self, split: str) -> list[int]:
        """Row numbers of one split; a split with no rows is refused (nothing to train or select on)."""
        found = self.index.index[self.index["split"] == split].tolist()
        if not found:
            raise DatasetError(f"the {split!r} split is empty; fine-tuning trains on 'train' and stops early on "
                               "'val': give split.val_fraction > 0 (and a dataset with enough patients)")
        return found

    def labels(self, rows: Sequence[int]) -> list[int]:
        return [int(label) for label in self.index["label"].to_numpy()[list(rows)]]

    def images(self, rows: Sequence[int]) -> list[np.ndarray]:
        return [self.load(row) for row in rows]


def same_size_groups(rows: Sequence[int], sizes: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    groups: dict[Hashable, list[int]] = {}
    for row in rows:
        groups.setdefault(sizes[row], []).append(row)
    return groups


def chunks(rows: Sequence[int], size: int) -> list[list[int]]:
    return [list(rows[start:start + size]) for start in range(0, len(rows), size)]


def epoch_batches(rows: Sequence[int], sizes: Sequence[Hashable], batch_size: int, seed: int,
                  epoch: int) -> list[list[int]]:
    """One epoch of training batches: rows shuffled within their size bucket, cut into batches, batches shuffled;
    a function of ``(seed, epoch)`` only."""
    rng = np.random.default_rng([seed, epoch])
    batches = []
    for _, members in sorted(same_size_groups(rows, sizes).items()):
        batches += chunks([members[i] for i in rng.permutation(len(members))], batch_size)
    return [batches[i] for i in rng.permutation(len(batches))]


def eval_batches(rows: Sequence[int], sizes: Sequence[Hashable], batch_size: int) -> list[list[int]]:
    """Batches for evaluation: same-size rows in order."""
    return [batch for _, members in sorted(same_size_groups(rows, sizes).items())
            for batch in chunks(members, batch_size)]


def batches_per_epoch(rows: Sequence[int], sizes: Sequence[Hashable], batch_size: int) -> int:
    return sum(-(-len(members) // batch_size) for members in same_size_groups(rows, sizes).values())


def padded(rows: Sequence[int], multiple: int, size: int | None = None) -> tuple[list[int], list[float]]:
    """``rows`` padded (repeating the last) to ``size`` or the next multiple of ``multiple``, with weights 0 for the
    padding: every batch of a run has one shape, and the mesh's data axis divides it."""
    target = size if size is not None else len(rows)
    target = -(-target // multiple) * multiple
    return list(rows) + [rows[-1]] * (target - len(rows)), [1.0] * len(rows) + [0.0] * (target - len(rows))
