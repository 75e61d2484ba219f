"""A dynamic table's contents at one instant, and back: what its snapshots write and read.

`capture()` takes, under the table's lock, everything but the rows (keys with their slots,
update steps and counts, admission counts, the pending gradient, step, evictions) and starts
keeping the rows of that instant aside as they change (copy on write:
service.core.dynamic.slot_rows.RowsAtInstant), so `captured_rows()` can read them chunk by
chunk while training goes on; `release()` ends it. `restore()` makes a new table what a capture
described. DynamicTable's methods of the same names call these (here for the table module's
size).
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


def capture(table: DynamicTable) -> Contents:
    """The table's contents at this instant, rows aside: keys ascending with their slots,
    update steps and counts, admission counts, pending gradient, step, evicted count. Until
    `release()`, rows changed are copied aside first, so `captured_rows(slots)` reads them
    as of this instant (service.core.dynamic.slot_rows.RowsAtInstant)."""
    with table._locked():
        if table._rows.at_instant is not None:
            raise RuntimeError(f"table {table.name!r} is already being captured")
        keys, slots = table._index.items(ascending=False)  # (rows,) each
        pending = table.pending_gradient
        contents = Contents(
            keys, slots, table._eviction.last_step(slots), table._eviction.updates(slots),
            table._admission.to_arrays() if table._admission is not None else None,
            pending.rows.copy(), pending.sums.copy(), pending.pushes, table.step,
            table.evicted_rows, table.tracker.changes, table.optimizer.config())
        table._rows.at_instant = RowsAtInstant(slots, table._index.slot_count,
                                              list(table._rows.arrays()),
                                              table.embedding_dim, table.dtype)
    return contents.ascending()


def captured_rows(table: DynamicTable, slots: np.ndarray) -> dict[str, np.ndarray]:
    """{"weights": (b, dim), state name: (b, dim)} of captured slots, as of the capture."""
    with table._locked():
        assert table._rows.at_instant is not None, "capture() first"
        return table._rows.at_instant.read(slots, table._rows.arrays())


def release(table: DynamicTable) -> None:
    """End a capture (a no-op without one)."""
    with table._locked():
        table._rows.at_instant = None


def restore(table: DynamicTable, contents: Contents, rows: dict[str, np.ndarray]) -> None:
    """Become the table a capture described (a new table, before it serves): rows[name]
    (n, dim) are the rows of contents.keys, in that order."""
    count = len(contents.keys)
    with table._locked():
        table._index = KeyIndex.from_arrays(contents.keys)  # key i in slot i
        table._rows = SlotRows.of_arrays(table.optimizer, rows["weights"],
                                        {name: rows[name] for name in table._rows.state})
        table._eviction = EvictionTracker.from_arrays(
            table._index, table.settings.evict, table.capacity_here,
            table.settings.ttl_steps, np.arange(count), contents.last_step,
            contents.updates, int(contents.last_step.max()) if count else -1)
        if table._admission is not None and contents.admission is not None:
            arrays = contents.admission
            table._admission = AdmissionCounter.from_arrays(
                table.settings.admit_after, table.settings.max_candidates, arrays["keys"],
                arrays["counts"], arrays["last_push"], int(arrays["pushes"]),
                int(arrays["forgotten"]))
        table.step = contents.step
        table.evicted_rows = contents.evicted_rows
        table.pending_gradient.restore(contents.pending_rows, contents.pending_sums,
                                      contents.pushes_since_apply)
        table.tracker.note(None)
