"""The extraction loop: rows -> same-shape batches -> forward -> pooled vectors -> FeatureStore chunks.

Rows are ordered by shape bucket when the store is created, so every batch has one shape (jit compiles once per
bucket) and chunks are written in row order: a run killed at any moment restarts at the first unwritten chunk
and ends with exactly the features of an uninterrupted run.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from jaxprobe.features import FeatureStoreWriter

# forward(batch rows) -> ({site: [b, D]}, answers frame with b rows or None)
Forward = Callable[[Sequence[Any]], tuple[dict[str, np.ndarray], pd.DataFrame | None]]


def same_bucket_batches(rows: Sequence[Any], buckets: Sequence[Hashable], batch_size: int) -> Iterator[list[Any]]:
    """Consecutive rows of one bucket, at most ``batch_size`` at a time."""
    position = 0
    for _, run in itertools.groupby(buckets):
        length = len(list(run))
        for start in range(position, position + length, batch_size):
            yield list(rows[start:min(start + batch_size, position + length)])
        position += length


def extract_into(writer: FeatureStoreWriter, rows: Sequence[Any], buckets: Sequence[Hashable], forward: Forward,
                 batch_size: int, chunk_rows: int, progress: bool = True) -> int:
    """Fill ``writer`` from its first unwritten row; returns how many rows this call wrote."""
    start, total = writer.rows_done, len(rows)
    bar = tqdm(total=total, initial=start, desc="extracting", unit="img", disable=not progress, smoothing=0.1)
    for chunk_start in range(start, total, chunk_rows):
        chunk_end = min(chunk_start + chunk_rows, total)
        pieces, answers = [], []
        for batch in same_bucket_batches(rows[chunk_start:chunk_end], buckets[chunk_start:chunk_end], batch_size):
            features, answer = forward(batch)
            pieces.append(features)
            if answer is not None:
                answers.append(answer)
            bar.update(len(batch))
        merged = {site: np.concatenate([piece[site] for piece in pieces]) for site in pieces[0]}
        writer.write_chunk(chunk_start, merged, pd.concat(answers, ignore_index=True) if answers else None)
    bar.close()
    return total - start
