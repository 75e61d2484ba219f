"""The rows of a dynamic table: weights and optimizer state, one row per slot of its key index.

Slots are handed out by the KeyIndex (service.core.dynamic.keyindex): freed slots are reused, so
the arrays stay as long as the most rows live at once. They grow in place (numpy's resize, which
reallocates: glibc moves a large block's pages with mremap instead of copying them) by at least
a sixteenth, so growth is amortized and at most 1/16 of the rows' bytes is slack. The table asks
`growth_bytes` of the memory budget before `grow`. No view of these arrays ever leaves the
table's lock (lookups copy, the optimizer kernels write during the call), which is what makes
growing them in place safe.

While a snapshot streams the rows without the table's lock, `RowsAtInstant` keeps the rows as of
the instant the snapshot began: before any row of that instant is written (an optimizer step, a
new row in a reused slot, a weights import), its old values are copied aside once (copy on
write). The snapshot then reads each row from the copy if there is one, else from the live
arrays, under the lock: the files hold the table exactly as it was at that instant, and the
extra memory is the rows changed during the write that the write had not reached yet.

Not thread-safe: the table calls it under its lock.
"""

from __future__ import annotations

import numpy as np

from service.core.dynamic.backend import kernel, selected
from service.core.optimizers import Optimizer

MIN_ROWS = 256


class RowsAtInstant:
    """Copy-on-write of a snapshot's rows (`slots`, the live slots when it began)."""

    def __init__(self, slots: np.ndarray, slot_count: int, names: list[str], dim: int,
                 dtype: np.dtype) -> None:
        self._waiting = np.zeros(slot_count, dtype=bool)  # (slots,) not written, not copied yet
        self._waiting[slots] = True
        self._copy_at = np.full(slot_count, -1, dtype=np.int64)  # (slots,) row in the copies
        self._copies = {name: np.empty((0, dim), dtype=dtype) for name in names}  # (m, dim)
        self._copied = 0

    @property
    def nbytes(self) -> int:
        return (self._waiting.nbytes + self._copy_at.nbytes
                + sum(copy.nbytes for copy in self._copies.values()))

    def preserve(self, slots: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
        """Before `slots` of `arrays` are written: copy the rows the snapshot still needs."""
        slots = slots[slots < len(self._waiting)]
        needed = np.unique(slots[self._waiting[slots]])  # (m,)
        if needed.size == 0:
            return
        end = self._copied + needed.size
        for name, copy in self._copies.items():
            if end > len(copy):
                grown = np.empty((max(end, 2 * len(copy)), copy.shape[1]), dtype=copy.dtype)
                grown[: self._copied] = copy[: self._copied]
                self._copies[name] = copy = grown
            copy[self._copied : end] = arrays[name][needed]
        self._copy_at[needed] = np.arange(self._copied, end)
        self._waiting[needed] = False
        self._copied = end

    def read(self, slots: np.ndarray, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The rows of `slots` (snapshot slots, each read once) as of the instant."""
        rows = {name: np.take(array, slots, axis=0) for name, array in arrays.items()}
        at = self._copy_at[slots]  # (b,)
        copied = at >= 0
        if copied.any():
            for name, values in rows.items():
                values[copied] = self._copies[name][at[copied]]
        self._waiting[slots] = False
        return rows


class SlotRows:
    """Weights and optimizer state arrays (capacity, dim) indexed by slot."""

    def __init__(self, embedding_dim: int, dtype: np.dtype, optimizer: Optimizer) -> None:
        self.optimizer = optimizer
        self.weights = np.zeros((0, embedding_dim), dtype=dtype)  # (capacity, dim)
        self.state = optimizer.init_state((0, embedding_dim), dtype)  # name -> (capacity, dim)
        self.at_instant: RowsAtInstant | None = None  # while a snapshot is being written

    @classmethod
    def of_arrays(cls, optimizer: Optimizer, weights: np.ndarray,
                  state: dict[str, np.ndarray]) -> SlotRows:
        """Rows restored from a snapshot (copied: the arrays must own their memory to grow)."""
        rows = cls(weights.shape[1], weights.dtype, optimizer)
        rows.weights = np.array(weights, order="C", copy=True)
        rows.state = {name: np.array(state[name], order="C", copy=True)
                      for name in optimizer.state_names}
        return rows

    @property
    def capacity(self) -> int:
        return int(self.weights.shape[0])

    @property
    def row_bytes(self) -> int:
        """Bytes of one slot: its weights and its optimizer state."""
        count: int = (1 + len(self.state)) * self.weights.shape[1] * self.weights.dtype.itemsize
        return count

    @property
    def nbytes(self) -> int:
        held = self.capacity * self.row_bytes
        return held + (self.at_instant.nbytes if self.at_instant is not None else 0)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays by name: "weights", then the optimizer's state names."""
        return {"weights": self.weights, **self.state}

    def _grown_capacity(self, slot_count: int) -> int:
        if slot_count <= self.capacity:
            return self.capacity
        return max(slot_count, self.capacity + self.capacity // 16, MIN_ROWS)

    def growth_bytes(self, slot_count: int) -> int:
        """Bytes `grow(slot_count)` would add."""
        return (self._grown_capacity(slot_count) - self.capacity) * self.row_bytes

    def grow(self, slot_count: int) -> None:
        """Room for slots below slot_count (new rows zero; they are written before use)."""
        capacity = self._grown_capacity(slot_count)
        if capacity == self.capacity:
            return
        for array in self.arrays().values():
            array.resize((capacity, array.shape[1]), refcheck=False)

    def before_write(self, slots: np.ndarray) -> None:
        """Rows of `slots` are about to change: a snapshot being written keeps their old values."""
        if self.at_instant is not None:
            self.at_instant.preserve(slots, self.arrays())

    def write_new(self, slots: np.ndarray, rows: np.ndarray) -> None:
        """New rows at `slots`: weights `rows` (k, dim), the optimizer's fresh state."""
        self.before_write(slots)
        self.weights[slots] = rows
        if self.state:
            fresh = self.optimizer.init_state((len(slots), self.weights.shape[1]),
                                              self.weights.dtype)
            for name, array in self.state.items():
                array[slots] = fresh[name]

    def gather(self, slots: np.ndarray, out: np.ndarray) -> np.ndarray:
        """out[i] = weights[slots[i]] where slots[i] >= 0; (m,) the positions where it is -1."""
        if selected() == "numba":
            missing = np.empty(len(slots), dtype=np.int64)
            absent: int = _gather_present(self.weights, slots, out, missing)
            return missing[:absent]
        missing = np.flatnonzero(slots < 0)  # (m,)
        if missing.size == 0:
            np.take(self.weights, slots, axis=0, out=out)
            return missing
        present = np.flatnonzero(slots >= 0)
        out[present] = self.weights[slots[present]]
        return missing


@kernel
def _gather_present(weights: np.ndarray, slots: np.ndarray, out: np.ndarray,
                    missing: np.ndarray) -> int:
    """One pass: copy each present slot's row into out, list the absent positions; their
    count."""
    absent = 0
    for i in range(slots.size):
        slot = slots[i]
        if slot < 0:
            missing[absent] = i
            absent += 1
        else:
            for column in range(weights.shape[1]):
                out[i, column] = weights[slot, column]
    return absent


__all__ = ["RowsAtInstant", "SlotRows"]
