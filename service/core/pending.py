"""The pending gradient of one table: pushed, not yet applied, and how many pushes.

A sparse accumulator: one slot per distinct pending row (`rows`, `sums`, in order of first push)
and a sorted index of those rows (`_index_rows` with their `_index_slots`) searched with the
search_sorted kernel. Rows are any int64 keys (negative or beyond a table's size included: the
accumulator never looks at a table), and memory and time follow the rows pushed, never the
table size: no dense (num_embeddings, dim) buffer, no per-row map over a table.

Not thread-safe on its own: its table calls it under the table's lock.

    pending = PendingGradient("words", 64, np.dtype(np.float32), budget)
    rows, slot_of_id = kernels.sorted_distinct(ids)          # a push's distinct rows (no lock)
    pending.add(rows, slot_of_id, grads)                     # summed in, one push counted
    pending.rows, pending.sums, pending.pushes               # what an apply uses
"""

from __future__ import annotations

import numpy as np

from service.core import kernels
from service.core.budget import MemoryBudget
from service.core.errors import BudgetExceeded, InvalidRequest

RELEASE_ABOVE_ROWS = 65536  # after an apply, buffers larger than this are given back


def check_finite_sums(rows: np.ndarray, sums: np.ndarray, grads: np.ndarray) -> None:
    """Refuse a push whose summed gradient is not finite: a NaN or infinity pushed (any such
    term makes its sum non-finite, so the sums check the gradient too), or finite gradients
    whose sum overflows (1e308 + 1e308)."""
    bad = kernels.first_non_finite_row(sums)
    if bad < 0:
        return
    if not np.isfinite(grads).all():
        raise InvalidRequest("grads must be finite, got NaN or infinity")
    raise InvalidRequest(
        f"grads overflow: the summed gradient of row {int(rows[bad])} is not finite "
        f"in the table's dtype {sums.dtype}"
    )


class PendingGradient:
    """Per-row sums of the gradients pushed since the last apply, and how many pushes."""

    def __init__(
        self, table: str, embedding_dim: int, dtype: np.dtype, budget: MemoryBudget | None = None
    ) -> None:
        self.table = table
        self.embedding_dim = embedding_dim
        self.dtype = dtype
        self.budget = budget  # asked before the buffers grow; None: no limit
        self.pushes = 0  # pushes since the last apply
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

    def contains(self, rows: np.ndarray) -> np.ndarray:
        """(k,) bool: which of `rows` (sorted, distinct) have a pending gradient."""
        position: np.ndarray = kernels.search_sorted(self._index_rows, rows)  # (k,)
        found: np.ndarray = position < self._count
        found[found] = self._index_rows[position[found]] == rows[found]
        return found

    def add(self, rows: np.ndarray, slot_of_id: np.ndarray, grads: np.ndarray) -> None:
        """One push: add grads[j] (n, dim) into the pending sum of rows[slot_of_id[j]], in order
        of j, and count the push. rows (k,) int64 are sorted and distinct (sorted_distinct).
        Each pending sum starts at 0.0 and gets the pushed rows added one by one, push after
        push: bit-identical to np.add.at into one dense pending buffer across every push since
        the last apply. A push whose sums are not finite, or that breaks the memory budget, is
        refused with nothing changed. Costs O(n * dim + k log(count) + count) (the insert)."""
        count = self._count
        position = kernels.search_sorted(self._index_rows, rows)  # (k,) where each row goes
        found = position < count
        found[found] = self._index_rows[position[found]] == rows[found]
        slots = np.empty(len(rows), dtype=np.int64)  # (k,)
        slots[found] = self._index_slots[position[found]]
        new = ~found
        # the k rows' new sums are made aside (same additions, same order) so that a refused
        # push changes nothing
        sums = np.zeros((len(rows), self.embedding_dim), dtype=self.dtype)  # (k, dim)
        sums[found] = self._sums[slots[found]]
        kernels.scatter_add(sums, slot_of_id, grads, len(rows) == len(grads))
        check_finite_sums(rows, sums, grads)
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
        self.pushes += 1

    def restore(self, rows: np.ndarray, sums: np.ndarray, pushes: int) -> None:
        """Replace the pending gradient with rows (k,) distinct, their sums (k, dim) and the
        count of pushes they came from (a snapshot's)."""
        self.clear()
        rows = kernels.c_array(rows, np.int64)
        if len(rows):
            distinct, slot_of_id = kernels.sorted_distinct(rows)
            self.add(distinct, slot_of_id, kernels.c_array(sums, self.dtype))
        self.pushes = pushes

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
        what is needed; BudgetExceeded, with nothing changed, when not even that fits. The
        sorted index grows by the new rows too (16 bytes each), whichever way."""
        current = len(self._rows)
        index_growth = (capacity - self._count) * (self._index_rows.itemsize
                                                   + self._index_slots.itemsize)
        if capacity <= current:
            if self.budget is not None and index_growth > 0:
                self.budget.check_growth(self.table, index_growth)
            return
        row_bytes = self._rows.itemsize + self.embedding_dim * self.dtype.itemsize
        wanted = max(capacity, 2 * current, 64)
        if self.budget is not None:
            try:
                self.budget.check_growth(self.table, (wanted - current) * row_bytes
                                         + index_growth)
            except BudgetExceeded:
                self.budget.check_growth(self.table, (capacity - current) * row_bytes
                                         + index_growth)
                wanted = capacity
        rows = np.empty(wanted, dtype=np.int64)
        sums = np.empty((wanted, self.embedding_dim), dtype=self.dtype)
        rows[: self._count] = self.rows
        sums[: self._count] = self.sums
        self._rows, self._sums = rows, sums
