"""Gathering rows, W[ids] into a caller's buffer: at once, or a block at a time with word of
each block, so a caller can use the first rows (send them) while the rest are read.

    take_rows(weights, ids, out)                          # np.take, into out
    take_rows(weights, ids, out, progress, step)          # progress(rows_so_far, step) per block

The caller holds whatever lock makes the rows one consistent read (EmbeddingTable.lookup holds
the table's for the whole gather), so every block is read at the same `step`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

BLOCK_BYTES = 2**20  # rows gathered between two calls of `progress`
Progress = Callable[[int, int], None]  # (rows gathered so far, the step they are read at)


def take_rows(
    weights: np.ndarray, ids: np.ndarray, out: np.ndarray, progress: Progress | None = None,
    step: int = 0,
) -> None:
    """out[i] = weights[ids[i]] for every i (weights (V, dim), ids of any shape, out of shape
    ids.shape + (dim,), C-contiguous); with `progress`, BLOCK_BYTES of rows at a time, and
    progress(rows so far, flattened, step) after each block."""
    ids = ids.reshape(-1)  # (n,)
    out = out.reshape(-1, weights.shape[1])  # (n, dim), a view
    if progress is None:
        np.take(weights, ids, axis=0, out=out)
        return
    block = max(1, BLOCK_BYTES // max(1, out.strides[0]))
    for start in range(0, len(ids), block):
        stop = min(start + block, len(ids))
        np.take(weights, ids[start:stop], axis=0, out=out[start:stop])  # (stop - start, dim)
        progress(stop, step)
