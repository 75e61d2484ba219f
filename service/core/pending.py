"""The pending gradient of one table: pushed, not yet applied.

A sparse accumulator: one slot per distinct pending row (`rows`, `sums`, in order of first push)
and a sorted index of those rows (`_index_rows` with their `_index_slots`) searched with
np.searchsorted. Memory and time follow the rows pushed, never the table size: no dense
(num_embeddings, dim) buffer, no per-row map over the whole table, no pass over untouched rows.

Not thread-safe on its own: its table calls it under the table's lock.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from service.core.errors import BudgetExceeded, InvalidRequest
from service.core.scatter import add_rows_at

RELEASE_ABOVE_ROWS = 65536  # after an apply, buffers larger than this are given back


def check_finite_sums(rows: np.ndarray, sums: np.ndarray) -> None:
    """Finite gradients can still sum to infinity (1e308 + 1e308): refuse those pushes."""
    finite = np.isfinite(sums).all(axis=1)  # (k,)
    if not finite.all():
        raise InvalidRequest(
            f"grads overflow: the summed gradient of row {int(rows[~finite][0])} is not finite "
            f"in the table's dtype {sums.dtype}"
        )


class PendingGradient:
    """Per-row sums of the gradients pushed since the last apply, and how many pushes."""

    def __init__(self, embedding_dim: int, dtype: np.dtype) -> None:
        self.embedding_dim = embedding_dim
        self.dtype = dtype
        self.pushes = 0  # pushes since the last apply
        # Set by the registry: raises BudgetExceeded if growing by that many bytes breaks the
        # memory budget (the pending gradient is memory too).
        self.memory_check: Callable[[int], None] | None = None
        self._rows = np.empty(0, dtype=np.int64)  # (capacity,) row of each slot
        self._sums = np.empty((0, embedding_dim), dtype=dtype)  # (capacity, dim)
        self._count = 0  # slots in use
        self._index_rows = np.empty(0, dtype=np.int64)  # (count,) the pending rows, sorted
        self._index_slots = np.empty(0, dtype=np.int64)  # (count,) slot of each of those rows

    @property
    def count(self) -> int:
        """Distinct rows with a pending gradient."""
        return self._count

    @property
    def rows(self) -> np.ndarray:
        """(count,) the pending rows, in order of first push (a view)."""
        return self._rows[: self._count]

    @property
    def sums(self) -> np.ndarray:
        """(count, dim) their summed gradients (a view)."""
        return self._sums[: self._count]

    @property
    def nbytes(self) -> int:
        return (self._rows.nbytes + self._sums.nbytes
                + self._index_rows.nbytes + self._index_slots.nbytes)

    def add(self, rows: np.ndarray, row_of_id: np.ndarray, grads: np.ndarray) -> None:
        """Add grads[j] (n, dim) into the pending sum of rows[row_of_id[j]], in order of j.
        rows (k,) are sorted and distinct (np.unique). Each pending sum starts at 0.0 and gets
        the pushed rows added one by one, push after push: bit-identical to np.add.at into one
        dense pending buffer across every push since the last apply. A push whose sums overflow
        or that breaks the memory budget is refused with nothing changed. Costs
        O(n * dim + k log(count) + count) (the index insert)."""
        count = self._count
        position = np.searchsorted(self._index_rows, rows)  # (k,) where each row is or would go
        found = position < count
        found[found] = self._index_rows[position[found]] == rows[found]
        slots = np.empty(len(rows), dtype=np.int64)  # (k,)
        slots[found] = self._index_slots[position[found]]
        new = ~found
        # the k rows' new sums are made aside (same additions, same order) so that a refused
        # push changes nothing
        sums = np.zeros((len(rows), self.embedding_dim), dtype=self.dtype)  # (k, dim)
        sums[found] = self._sums[slots[found]]
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused just below
            add_rows_at(sums, row_of_id, grads, distinct=len(rows) == len(grads))
        check_finite_sums(rows, sums)
        new_count = len(rows) - int(found.sum())
        if new_count:
            self._reserve(count + new_count)
            new_slots = np.arange(count, count + new_count)
            slots[new] = new_slots
            self._rows[new_slots] = rows[new]
            self._index_rows = np.insert(self._index_rows, position[new], rows[new])
            self._index_slots = np.insert(self._index_slots, position[new], new_slots)
            self._count = count + new_count
        self._sums[slots] = sums

    def clear(self) -> None:
        """Forget every pending row and the push count."""
        self._index_rows = np.empty(0, dtype=np.int64)
        self._index_slots = np.empty(0, dtype=np.int64)
        self._count = 0
        self.pushes = 0
        if len(self._rows) > RELEASE_ABOVE_ROWS:  # give back the memory of an unusually large round
            self._rows = np.empty(0, dtype=np.int64)
            self._sums = np.empty((0, self.embedding_dim), dtype=self.dtype)

    def _reserve(self, capacity: int) -> None:
        """Room for `capacity` pending rows: doubling where the memory budget allows, else just
        what is needed; BudgetExceeded, with nothing changed, when not even that fits."""
        current = len(self._rows)
        if capacity <= current:
            return
        row_bytes = self._rows.itemsize + self.embedding_dim * self.dtype.itemsize
        wanted = max(capacity, 2 * current, 64)
        if self.memory_check is not None:
            try:
                self.memory_check((wanted - current) * row_bytes)
            except BudgetExceeded:
                self.memory_check((capacity - current) * row_bytes)
                wanted = capacity
        rows = np.empty(wanted, dtype=np.int64)
        sums = np.empty((wanted, self.embedding_dim), dtype=self.dtype)
        rows[: self._count] = self.rows
        sums[: self._count] = self.sums
        self._rows, self._sums = rows, sums
