"""What changed in a table, for its snapshots: a change count, and the rows changed during a write.

A snapshot (service.core.snapshots.write_table) streams a table's arrays to disk without holding
the table's lock; meanwhile the table keeps training. So, for the length of the write, the
table's ChangeTracker marks every row whose weights or optimizer state change; at the end, under
the table's lock, the snapshot rewrites those rows from the live arrays and records the step and
the pending gradient of that instant (a TablePoint). The change count lets the snapshot store
skip tables that did not change since their last snapshot.

The table calls `note` under its lock on every change; start/stop/cancel too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TablePoint:
    """What a snapshot records of one instant besides the arrays."""

    step: int
    changes: int
    optimizer: dict[str, Any]
    pending_rows: np.ndarray  # (k,) int64
    pending_sums: np.ndarray  # (k, dim)
    pushes_since_apply: int


class ChangeTracker:
    """Counts a table's changes; between start and stop, also marks the rows that changed."""

    def __init__(self) -> None:
        self.changes = 0  # since the table was made (or restored)
        self._marks: np.ndarray | None = None  # (num_rows,) bool while tracking

    @property
    def tracking(self) -> bool:
        return self._marks is not None

    def note(self, rows: np.ndarray | slice | None) -> None:
        """One change; while tracking, `rows` (indices, or a slice) had their weights or
        optimizer state changed (None: only the pending gradient changed)."""
        self.changes += 1
        if rows is not None and self._marks is not None:
            self._marks[rows] = True

    def start(self, num_rows: int) -> None:
        """Mark changed rows from now on (one byte a row)."""
        self._marks = np.zeros(num_rows, dtype=bool)

    def stop(self) -> np.ndarray:
        """Stop marking; the rows marked since start (sorted int64)."""
        marks, self._marks = self._marks, None
        return np.empty(0, np.int64) if marks is None else np.flatnonzero(marks)

    def cancel(self) -> None:
        self._marks = None
