"""Scatter-add of gradient rows: the backward pass of an embedding layer, done sparsely.

`np.add.at(dW, ids, grads)` on a dense (num_embeddings, dim) buffer is the reference. Here the
same sums are computed on a compact (distinct_rows, dim) buffer instead, so the cost follows the
number of ids pushed, never the table size. The result is bit-identical to the reference, float32
included: every element is summed from 0.0 in the order of the pushed rows, as np.add.at does.

How (measured by bench/apply_cost.py, 4096 x 64 rows with Zipf ids): np.add.at on a flat 1-D
view of the compact buffer, indexed by `row_slot * dim + column`. NumPy's 1-D np.add.at has a
fast inner loop; the 2-D form is 3-8x slower. `np.add.reduceat` after a stable sort is not
exact (it adds long segments in a different order), and `np.bincount(weights=)` sums float32 in
float64 (exact for float64 only), so neither is used.
"""

from __future__ import annotations

import numpy as np


def sum_duplicate_rows(ids: np.ndarray, grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum the gradient rows of repeated ids.

    ids: (n,) integer ids; grads: (n, dim). Returns (rows, sums): the distinct ids, sorted, and
    sums[i] = 0.0 + the grads[j] of every j with ids[j] == rows[i], added in order of j; the
    sums have grads' dtype.

    >>> rows, sums = sum_duplicate_rows(np.array([3, 1, 3]), np.array([[1.0], [2.0], [4.0]]))
    >>> rows.tolist(), sums.tolist()
    ([1, 3], [[2.0], [5.0]])
    """
    rows, slot = np.unique(ids, return_inverse=True)  # (k,), (n,)
    dim = grads.shape[1]
    sums = np.zeros((len(rows), dim), dtype=grads.dtype)  # (k, dim)
    if len(rows) == len(ids):  # no duplicates: one addition per element, no ordering to keep
        sums[slot] += grads
        return rows, sums
    flat_index = (slot.reshape(-1, 1) * dim + np.arange(dim)).reshape(-1)  # (n * dim,)
    np.add.at(sums.reshape(-1), flat_index, np.ascontiguousarray(grads).reshape(-1))
    return rows, sums


__all__ = ["sum_duplicate_rows"]
