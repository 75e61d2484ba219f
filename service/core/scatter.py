"""Summing a push's gradient rows by id: the backward pass of an embedding layer, done sparsely.

`np.add.at(dW, ids, grads)` on a dense (num_embeddings, dim) buffer is the reference. Here the
same sums are computed on a compact (distinct_rows, dim) buffer instead, so the cost follows the
number of ids pushed, never the table size. The result is bit-identical to the reference, float32
included: every element is summed from 0.0 in the order of the pushed rows, as np.add.at does.
The work is two kernels (service.core.kernels): sorted_distinct, then scatter_add.
"""

from __future__ import annotations

import numpy as np

from service.core import kernels


def sum_duplicate_rows(ids: np.ndarray, grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum the gradient rows of repeated ids.

    ids: (n,) integer ids; grads: (n, dim) float32 or float64. Returns (rows, sums): the distinct
    ids, sorted, and sums[i] = 0.0 + the grads[j] of every j with ids[j] == rows[i], added in
    order of j; the sums have grads' dtype.

    >>> rows, sums = sum_duplicate_rows(np.array([3, 1, 3]), np.array([[1.0], [2.0], [4.0]]))
    >>> rows.tolist(), sums.tolist()
    ([1, 3], [[2.0], [5.0]])
    """
    ids = kernels.c_array(ids, np.int64)  # (n,)
    grads = kernels.c_array(grads, grads.dtype)  # (n, dim)
    rows, slot_of_id = kernels.sorted_distinct(ids)  # (k,), (n,)
    sums = np.zeros((len(rows), grads.shape[1]), dtype=grads.dtype)  # (k, dim)
    with np.errstate(over="ignore", invalid="ignore"):  # the caller checks the sums
        kernels.scatter_add(sums, slot_of_id, grads, len(rows) == len(ids))
    return rows, sums


__all__ = ["sum_duplicate_rows"]
