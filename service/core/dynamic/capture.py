"""A dynamic table's contents at one instant, and back: what its snapshots write and read.

`capture()` takes, under the table's lock, everything but the rows (keys with their slots,
update steps and counts, admission counts, the pending gradient, step, evictions) and starts
keeping the rows of that instant aside as they change (copy on write:
service.core.dynamic.slot_rows.RowsAtInstant), so `captured_rows()` can read them chunk by
chunk while training goes on; `release()` ends it. `restore()` makes a new table what a capture
described. A part of DynamicTable (service.core.dynamic.table), in its own module for size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from service.core.dynamic.admission import AdmissionCounter
from service.core.dynamic.contents import Contents
from service.core.dynamic.eviction import EvictionTracker
from service.core.dynamic.keyindex import KeyIndex
from service.core.dynamic.slot_rows import RowsAtInstant, SlotRows

if TYPE_CHECKING:
    from service.core.dynamic.table import DynamicTable


class Capture:
    """The capture and restore methods of DynamicTable."""

    def capture(self: DynamicTable) -> Contents:
        """The table's contents at this instant, rows aside: keys ascending with their slots,
        update steps and counts, admission counts, pending gradient, step, evicted count. Until
        `release()`, rows changed are copied aside first, so `captured_rows(slots)` reads them
        as of this instant (service.core.dynamic.slot_rows.RowsAtInstant)."""
        with self._locked():
            if self._rows.at_instant is not None:
                raise RuntimeError(f"table {self.name!r} is already being captured")
            keys, slots = self._index.items(ascending=False)  # (rows,) each
            pending = self.pending_gradient
            contents = Contents(
                keys, slots, self._eviction.last_step(slots), self._eviction.updates(slots),
                self._admission.to_arrays() if self._admission is not None else None,
                pending.rows.copy(), pending.sums.copy(), pending.pushes, self.step,
                self.evicted_rows, self.tracker.changes, self.optimizer.config())
            self._rows.at_instant = RowsAtInstant(slots, self._index.slot_count,
                                                  list(self._rows.arrays()),
                                                  self.embedding_dim, self.dtype)
        return contents.ascending()

    def captured_rows(self: DynamicTable, slots: np.ndarray) -> dict[str, np.ndarray]:
        """{"weights": (b, dim), state name: (b, dim)} of captured slots, as of the capture."""
        with self._locked():
            assert self._rows.at_instant is not None, "capture() first"
            return self._rows.at_instant.read(slots, self._rows.arrays())

    def release(self: DynamicTable) -> None:
        """End a capture (a no-op without one)."""
        with self._locked():
            self._rows.at_instant = None

    def restore(self: DynamicTable, contents: Contents, rows: dict[str, np.ndarray]) -> None:
        """Become the table a capture described (a new table, before it serves): rows[name]
        (n, dim) are the rows of contents.keys, in that order."""
        count = len(contents.keys)
        with self._locked():
            self._index = KeyIndex.from_arrays(contents.keys)  # key i in slot i
            self._rows = SlotRows.of_arrays(self.optimizer, rows["weights"],
                                            {name: rows[name] for name in self._rows.state})
            self._eviction = EvictionTracker.from_arrays(
                self._index, self.settings.evict, self.settings.capacity,
                self.settings.ttl_steps, np.arange(count), contents.last_step,
                contents.updates, int(contents.last_step.max()) if count else -1)
            if self._admission is not None and contents.admission is not None:
                arrays = contents.admission
                self._admission = AdmissionCounter.from_arrays(
                    self.settings.admit_after, self.settings.max_candidates, arrays["keys"],
                    arrays["counts"], arrays["last_push"], int(arrays["pushes"]),
                    int(arrays["forgotten"]))
            self.step = contents.step
            self.evicted_rows = contents.evicted_rows
            self.pending_gradient.restore(contents.pending_rows, contents.pending_sums,
                                          contents.pushes_since_apply)
            self.tracker.note(None)
