"""The key index's probe loops in plain numpy: every key of a batch probes at once, in rounds.

Same bucket layout as keyindex_numba (see there). Each round looks at a window of buckets for
every key still unresolved, so the number of rounds is the longest probe among the batch over
the window width, not the batch size. Inserts place a batch round by round (the first key of
the batch to reach a free bucket takes it), and deletion clears the found buckets and puts the
rest of each cluster back through the same placement, which keeps the linear-probing invariant
(no empty bucket between a key's home and its bucket) without tombstones. Rebuilding a whole
table (growth, restore) sorts the entries by home and places them with one cumulative maximum.

The layout may differ from the compiled loops' (entries of one cluster in another order); every
answer (slots, keys) is the same, which is what the tests compare.
"""

from __future__ import annotations

import numpy as np

from service.core.dynamic.arrays import sorted_distinct
from service.core.dynamic.hashing import mix64

WINDOW = 8  # buckets looked at per key per round after the first
_LOW32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


def tags_of(keys: np.ndarray) -> np.ndarray:
    """(n,) uint64 the high 32 bits of mix64(key)."""
    return mix64(keys.view(np.uint64)) >> _S32


def homes_of(tags: np.ndarray, capacity: int) -> np.ndarray:
    """(n,) int64 the home bucket of each tag in a table of `capacity` buckets."""
    return ((tags * np.uint64(capacity)) >> _S32).astype(np.int64)


def find(
    buckets: np.ndarray, slot_keys: np.ndarray, keys: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """((n,) slot of each key or -1, (n,) its bucket or -1)."""
    cap = buckets.size
    tags = tags_of(keys)  # (n,)
    position = homes_of(tags, cap)  # (n,) the bucket each unresolved key looks at next
    slots = np.full(keys.size, -1, dtype=np.int64)
    where = np.full(keys.size, -1, dtype=np.int64)
    active = np.arange(keys.size)  # (m,) keys not resolved yet
    width = 1
    while active.size:
        window = (position[:, None] + np.arange(width)) % cap  # (m, width)
        entries = buckets[window]  # (m, width)
        empty = entries == 0
        candidate_slots = (entries & _LOW32).astype(np.int64) - 1  # (m, width), -1 if empty
        hit = ~empty & ((entries >> _S32) == tags[:, None])
        hit[hit] = slot_keys[candidate_slots[hit]] == keys[active][np.nonzero(hit)[0]]
        stop = empty | hit
        resolved = stop.any(axis=1)  # (m,)
        first = stop.argmax(axis=1)  # (m,) first stop in each window
        rows = np.flatnonzero(resolved)
        found = rows[hit[rows, first[rows]]]
        slots[active[found]] = candidate_slots[found, first[found]]
        where[active[found]] = window[found, first[found]]
        keep = ~resolved
        active, position, tags = active[keep], (position[keep] + width) % cap, tags[keep]
        width = WINDOW
    return slots, where


def lookup(buckets: np.ndarray, slot_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """(n,) the slot of each key, -1 where absent."""
    return find(buckets, slot_keys, keys)[0]


def place(buckets: np.ndarray, entries: np.ndarray) -> None:
    """Put encoded entries (none of them present) into their first free bucket from home.
    Each round every entry looks at a window of buckets and claims its first free one; of
    several claiming the same bucket the first in the batch wins, the others look again from
    where they were (that bucket is taken now), and entries with no free bucket in their
    window move one window on."""
    cap = buckets.size
    position = homes_of(entries >> _S32, cap)  # (m,) where each entry looks from
    pending = entries
    while pending.size:
        window = (position[:, None] + np.arange(WINDOW)) % cap  # (m, WINDOW)
        free = buckets[window] == 0
        has_free = free.any(axis=1)  # (m,)
        target = window[np.arange(pending.size), free.argmax(axis=1)]  # (m,) first free
        candidates = np.flatnonzero(has_free)
        _, first = np.unique(target[candidates], return_index=True)  # first claim wins
        winners = candidates[first]
        buckets[target[winners]] = pending[winners]
        keep = np.ones(pending.size, dtype=bool)
        keep[winners] = False
        position = np.where(has_free, position, (position + WINDOW) % cap)[keep]
        pending = pending[keep]


def remove(buckets: np.ndarray, slot_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Remove each present key; (n,) the slot it had, -1 where absent (or repeated)."""
    cap = buckets.size
    slots, where = find(buckets, slot_keys, keys)
    found = np.flatnonzero(slots >= 0)
    _, first = np.unique(where[found], return_index=True)
    repeated = np.ones(found.size, dtype=bool)
    repeated[first] = False
    slots[found[repeated]] = -1
    holes = where[found[first]]
    buckets[holes] = 0
    # The rest of each cluster after a hole (up to the next empty bucket) goes back through
    # placement, a window at a time.
    moved: list[np.ndarray] = []
    position = holes
    while position.size:
        window = (position[:, None] + np.arange(1, WINDOW + 1)) % cap  # (m, WINDOW)
        run = np.logical_and.accumulate(buckets[window] != 0, axis=1)  # occupied from start
        moved.append(window[run])
        position = window[run[:, -1], -1]  # clusters that go on past the window
    positions = sorted_distinct(np.concatenate(moved)) if moved else holes  # tails may overlap
    if positions.size:
        entries = buckets[positions]
        buckets[positions] = 0
        place(buckets, entries)
    return slots


def build(capacity: int, entries: np.ndarray) -> np.ndarray:
    """A new table of `capacity` buckets holding `entries`: sorted by home, each placed at
    max(home, previous + 1), with the overflow past the end wrapped to the front."""
    buckets = np.zeros(capacity, dtype=np.uint64)
    if entries.size == 0:
        return buckets
    homes = homes_of(entries >> _S32, capacity)  # (n,)
    order = np.argsort(homes, kind="stable")
    homes, entries = homes[order], entries[order]
    rank = np.arange(entries.size)
    floor = 0  # buckets at the front taken by entries that wrapped around
    while True:
        start = homes.copy()
        start[0] = max(start[0], floor)
        position = rank + np.maximum.accumulate(start - rank)  # (n,) max(home, previous + 1)
        wrapped = int(position[-1]) - capacity + 1
        if wrapped <= floor:
            break
        floor = wrapped
    buckets[position % capacity] = entries
    return buckets
