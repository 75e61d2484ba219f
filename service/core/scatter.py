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


def add_rows_at(
    target: np.ndarray, slots: np.ndarray, grads: np.ndarray, *, distinct: bool | None = None
) -> None:
    """target[slots[j]] += grads[j] for every j, in order of j: np.add.at(target, slots, grads)
    bit for bit, faster. target (m, dim), slots (n,) ints in [0, m), grads (n, dim); `distinct`
    says whether the slots are all different, if the caller knows.

    >>> target = np.zeros((2, 1))
    >>> add_rows_at(target, np.array([1, 0, 1]), np.array([[1.0], [2.0], [4.0]]))
    >>> target.tolist()
    [[2.0], [5.0]]
    """
    if distinct is None:
        distinct = len(np.unique(slots)) == len(slots)
    if distinct:  # one addition per element: no order to keep
        target[slots] += grads
        return
    dim = target.shape[1]
    if not target.flags.c_contiguous:  # no flat view to write through
        np.add.at(target, slots, grads)
        return
    flat_index = (slots.reshape(-1, 1) * dim + np.arange(dim)).reshape(-1)  # (n * dim,)
    np.add.at(target.reshape(-1), flat_index, np.ascontiguousarray(grads).reshape(-1))


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
    sums = np.zeros((len(rows), grads.shape[1]), dtype=grads.dtype)  # (k, dim)
    add_rows_at(sums, slot.reshape(-1), grads, distinct=len(rows) == len(ids))
    return rows, sums


__all__ = ["add_rows_at", "sum_duplicate_rows"]
