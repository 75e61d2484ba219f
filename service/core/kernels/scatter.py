"""Scatter-add of gradient rows in arrival order, and the finiteness check of the sums.

`scatter_add(target, slots, grads, distinct)` is `np.add.at(target, slots, grads)` bit for bit:
every target row gets the grads rows of its slot added one by one, in order of j. The compiled
loop is exactly that, one pass over the gradient. The numpy twin runs np.add.at on a flat 1-D
view of target (indexed by `slot * dim + column`): numpy's 1-D np.add.at has a fast inner loop,
the 2-D form is several times slower. `np.add.reduceat` after a sort is not exact (it adds long
segments in another order) and `np.bincount(weights=)` sums float32 in float64, so neither is
used (bench/apply_cost.py --part reduce measures them all).

`first_non_finite_row(array)`: the first row holding an inf or NaN, or -1. A sum is non-finite
exactly when one of its terms is or the additions overflow, so checking the sums also checks the
gradient that went into them.

Arrays: target (m, dim) C-contiguous, slots (n,) int64 in [0, m), grads (n, dim) C-contiguous,
all of one float dtype (float32 or float64).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from service.core.kernels.backend import Kernel, array

FLOATS = ("float32", "float64")


def _scatter_add_loop(
    target: np.ndarray, slots: np.ndarray, grads: np.ndarray, distinct: bool
) -> None:
    dim = target.shape[1]
    for j in range(slots.shape[0]):
        slot = slots[j]
        for column in range(dim):
            target[slot, column] += grads[j, column]


def _scatter_add_numpy(
    target: np.ndarray, slots: np.ndarray, grads: np.ndarray, distinct: bool
) -> None:
    with np.errstate(all="ignore"):  # overflow is the caller's to check (first_non_finite_row)
        if distinct:  # one addition per element: no order to keep
            target[slots] += grads
            return
        dim = target.shape[1]
        flat_index = (slots.reshape(-1, 1) * dim + np.arange(dim)).reshape(-1)  # (n * dim,)
        np.add.at(target.reshape(-1), flat_index, grads.reshape(-1))


def _scatter_add_signatures(types: ModuleType) -> list[Any]:
    return [types.void(array(types, dtype, 2), array(types, "int64", 1, readonly=True),
                       array(types, dtype, 2, readonly=True), types.boolean)
            for dtype in FLOATS]


scatter_add = Kernel("scatter_add", numpy=_scatter_add_numpy, loop=_scatter_add_loop,
                     signatures=_scatter_add_signatures)


def _first_non_finite_row_loop(values: np.ndarray) -> int:
    dim = values.shape[1]
    probe = np.zeros(dim, dtype=values.dtype)  # (dim,) stays 0 unless a column holds inf/NaN
    for row in range(values.shape[0]):
        for column in range(dim):  # x - x: 0 for a finite x, NaN for inf or NaN
            probe[column] += values[row, column] - values[row, column]
    clean = True
    for column in range(dim):
        if probe[column] != probe[column]:
            clean = False
    if clean:
        return -1
    for row in range(values.shape[0]):  # rare: find the row
        for column in range(dim):
            if not np.isfinite(values[row, column]):
                return row
    return -1


def _first_non_finite_row_numpy(values: np.ndarray) -> int:
    finite = np.isfinite(values).all(axis=1)  # (k,)
    return -1 if finite.all() else int(np.argmin(finite))


def _first_non_finite_row_signatures(types: ModuleType) -> list[Any]:
    return [types.int64(array(types, dtype, 2, readonly=True)) for dtype in FLOATS]


first_non_finite_row = Kernel(
    "first_non_finite_row", numpy=_first_non_finite_row_numpy, loop=_first_non_finite_row_loop,
    signatures=_first_non_finite_row_signatures,
)

__all__ = ["FLOATS", "first_non_finite_row", "scatter_add"]
