"""What a dynamic table holds besides its rows, at one instant: the snapshot's plain arrays.

Every per-key array is in ascending key order, so a snapshot is a key-sorted set of arrays that
splits by key (a shard takes the keys it owns, the same positions of every array):

    keys (n,) int64 ascending; last_step (n,) int64; updates (n,) int64   (and the rows)
    admission: keys (c,) ascending, counts (c,), last_push (c,), pushes, forgotten
    pending_rows (k,) int64 keys; pending_sums (k, dim)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Contents:
    keys: np.ndarray  # (n,) int64
    slots: np.ndarray  # (n,) int64, where each key's row is (in the live table)
    last_step: np.ndarray  # (n,) int64 the step that last updated each row
    updates: np.ndarray  # (n,) int64 how many steps updated it
    admission: dict[str, np.ndarray] | None  # AdmissionCounter.to_arrays(), or None
    pending_rows: np.ndarray  # (k,) int64 keys with a pending gradient
    pending_sums: np.ndarray  # (k, dim)
    pushes_since_apply: int
    step: int
    evicted_rows: int
    changes: int
    optimizer: dict[str, Any]

    def ascending(self) -> Contents:
        """The same contents with the per-key arrays in ascending key order."""
        order = np.argsort(self.keys, kind="stable")  # (n,)
        return replace(self, keys=self.keys[order], slots=self.slots[order],
                       last_step=self.last_step[order], updates=self.updates[order])


__all__ = ["Contents"]
