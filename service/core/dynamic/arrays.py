"""Array helpers shared by the dynamic-table structures."""

from __future__ import annotations

import numpy as np

MIN_LENGTH = 16  # the smallest per-slot array worth allocating
MAX_LOAD = 0.7  # a key index grows past this fraction of its buckets in use
MIN_BUCKETS = 16


def sorted_distinct(values: np.ndarray) -> np.ndarray:
    """np.unique(values) by sorting: numpy 2.4's plain np.unique hashes, and is 20-200x
    slower than a sort on int64 (measured in bench/dynamic_keys.py's run log)."""
    ordered = np.sort(values.ravel())
    if ordered.size < 2:
        return ordered
    keep = np.empty(ordered.size, dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def has_repeats(values: np.ndarray) -> bool:
    return sorted_distinct(values).size != values.size


def grown_length(current: int, needed: int) -> int:
    """The length a per-slot array grows to when `needed` slots do not fit in `current`:
    by a quarter at least (amortized O(1) per slot, at most 25% unused)."""
    if needed <= current:
        return current
    return max(needed, current + current // 4, MIN_LENGTH)


def bucket_capacity_for(count: int, current: int = 0) -> int:
    """The bucket count for `count` keys: `current` grown by 1.5x until the load is <= 0.7."""
    capacity = max(current, MIN_BUCKETS)
    while count > MAX_LOAD * capacity:
        capacity += capacity // 2
    if capacity > 2**32:
        raise MemoryError(f"a key index holds at most {int(MAX_LOAD * 2**32)} keys, asked {count}")
    return capacity
