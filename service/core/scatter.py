"""Scatter-add of gradient rows: the backward pass of an embedding layer, done sparsely.

`np.add.at(dW, ids, grads)` on a dense (num_embeddings, dim) buffer is the reference. Here the
same sums are computed on a compact (distinct_rows, dim) buffer instead, so the cost follows the
number of ids pushed, never the table size. The additions happen in the same order as
np.add.at's (first occurrence first), so the result is bit-identical to the reference, float32
included.
"""

from __future__ import annotations

import numpy as np


def sum_duplicate_rows(ids: np.ndarray, grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum the gradient rows of repeated ids.

    ids: (n,) integer ids; grads: (n, dim). Returns (rows, sums): the distinct ids, sorted, and
    sums[i] = the sum of grads[j] over every j with ids[j] == rows[i], added in order of j.

    >>> rows, sums = sum_duplicate_rows(np.array([3, 1, 3]), np.array([[1.0], [2.0], [4.0]]))
    >>> rows.tolist(), sums.tolist()
    ([1, 3], [[2.0], [5.0]])
    """
    rows, position = np.unique(ids, return_inverse=True)
    if len(rows) == len(ids):  # no duplicates: a permutation, no additions needed
        sums = np.empty_like(grads)
        sums[position] = grads
        return rows, sums
    sums = np.zeros((len(rows), grads.shape[1]), dtype=grads.dtype)
    np.add.at(sums, position, grads)
    return rows, sums
