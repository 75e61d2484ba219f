"""The key index's probe loops, compiled: linear probing over packed buckets, one key at a time.

The layout (shared with keyindex_numpy, described in keyindex): `buckets` is uint64, 0 for an
empty bucket, else (tag << 32) | (slot + 1) where tag is the high 32 bits of mix64(key) and the
key's home bucket is (tag * len(buckets)) >> 32. A bucket's home is computed from the bucket
alone, so moving entries (deletion, growth) never reads the keys; only a tag match does, to
confirm the key in `slot_keys[slot]`.

Deletion shifts the entries after the freed bucket back toward their homes (Knuth's algorithm
R), so there are no tombstones and lookups never slow down after many deletions.
"""

from __future__ import annotations

import numpy as np

from service.core.dynamic.backend import inline_kernel, kernel
from service.core.dynamic.hashing import mix64_scalar

_LOW32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


@inline_kernel
def _find(
    buckets: np.ndarray, slot_keys: np.ndarray, key: np.int64
) -> tuple[np.int64, np.int64]:
    """(slot, bucket) of `key`, or (-1, first empty bucket on its probe path)."""
    cap = buckets.size
    tag = mix64_scalar(np.uint64(key)) >> _S32
    position = np.int64((tag * np.uint64(cap)) >> _S32)
    while True:
        entry = buckets[position]
        if entry == 0:
            return np.int64(-1), position
        if (entry >> _S32) == tag:
            slot = np.int64(entry & _LOW32) - 1
            if slot_keys[slot] == key:
                return slot, position
        position += 1
        if position == cap:
            position = np.int64(0)


@kernel
def lookup(buckets: np.ndarray, slot_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """(n,) the slot of each key, -1 where absent."""
    out = np.empty(keys.size, dtype=np.int64)
    for i in range(keys.size):
        out[i] = _find(buckets, slot_keys, keys[i])[0]
    return out


@kernel
def place(buckets: np.ndarray, entries: np.ndarray) -> None:
    """Put encoded entries (none of them present) into their first free bucket from home."""
    cap = buckets.size
    for i in range(entries.size):
        entry = entries[i]
        position = np.int64(((entry >> _S32) * np.uint64(cap)) >> _S32)
        while buckets[position] != 0:
            position += 1
            if position == cap:
                position = np.int64(0)
        buckets[position] = entry


@kernel
def remove(buckets: np.ndarray, slot_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Remove each present key; (n,) the slot it had, -1 where absent (or repeated)."""
    cap = buckets.size
    out = np.empty(keys.size, dtype=np.int64)
    for i in range(keys.size):
        slot, hole = _find(buckets, slot_keys, keys[i])
        out[i] = slot
        if slot < 0:
            continue
        # Backward shift: walk the cluster after the hole; an entry whose home is not in
        # (hole, here] cyclically may move into the hole, which then moves to where it was.
        here = hole
        while True:
            here += 1
            if here == cap:
                here = np.int64(0)
            entry = buckets[here]
            if entry == 0:
                break
            home = np.int64(((entry >> _S32) * np.uint64(cap)) >> _S32)
            if (here - home) % cap >= (here - hole) % cap:
                buckets[hole] = entry
                hole = here
        buckets[hole] = 0
    return out


@kernel
def insert_missing(buckets: np.ndarray, slot_keys: np.ndarray, free: np.ndarray,
                   counters: np.ndarray, keys: np.ndarray, missing: np.ndarray,
                   slots: np.ndarray, created: np.ndarray) -> None:
    """Give each keys[i], i in `missing` (in order), a slot: the one an earlier repeat got in
    this call, else the top of the free stack, else a new one. counters = [free count, slot
    count, size], updated. The caller reserved room for every missing key."""
    for i in missing:
        key = keys[i]
        slot, hole = _find(buckets, slot_keys, key)
        if slot < 0:
            if counters[0] > 0:
                counters[0] -= 1
                slot = free[counters[0]]
            else:
                slot = counters[1]
                counters[1] += 1
            counters[2] += 1
            slot_keys[slot] = key
            tag = mix64_scalar(np.uint64(key)) >> _S32
            buckets[hole] = (tag << _S32) | np.uint64(slot + 1)
            created[i] = True
        slots[i] = slot
