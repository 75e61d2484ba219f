"""The key index of a dynamic table: any 64-bit key -> the slot (row) that holds it.

A dynamic table keeps its rows in dense arrays indexed by *slot*; the key index maps keys to
slots, for whole batches at once:

    index = KeyIndex()
    slots, created = index.get_or_insert(keys)   # (n,) slots; created marks first appearances
    index.lookup(keys)                           # (n,) slots, -1 where a key has no row
    index.delete(keys)                           # (n,) slots given back, -1 where absent

Keys are int64; uint64 keys are the int64 with the same bits (`as_keys`). Slots are handed out
lowest-never-used first, except that slots given back by `delete` are reused first, the last
given back first (a stack), so a table under eviction stays as large as its live rows. The
assignment depends only on the sequence of calls, never on the backend or the bucket layout:
both backends answer every call identically.

The hash table is open addressing with linear probing over one uint64 array of buckets, each
`(tag << 32) | (slot + 1)` (0 = empty) where tag is the high half of splitmix64's mixer of the
key. The key itself lives once, in `slot_keys[slot]`, read only when a tag matches; a bucket's
home is `(tag * capacity) >> 32` (Lemire's multiply-shift), so capacity need not be a power of
two and growth is by 1.5x, keeping the load between 0.47 and 0.7: 11 to 17 bytes of buckets per
key, plus 8 for `slot_keys` (see `nbytes`). Deletion shifts the cluster back (no tombstones).
Linear probing with the key's tag inline finds most keys in their home bucket's cache line and
an absent key after a few adjacent buckets, with one random memory access per key: the
compiled loop (keyindex_numba) is the default, numpy rounds over the same layout
(keyindex_numpy) the fallback. bench/dynamic_keys.py measures both against sorted arrays +
searchsorted and a Python dict; the README says why this design.

Limits: at most 2^32 - 2 slots (the bucket holds slot + 1 in 32 bits) and 2^32 buckets. Not
thread-safe: the table calls it under its lock.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from service.core.dynamic import keyindex_numba, keyindex_numpy
from service.core.dynamic.arrays import (
    MIN_BUCKETS,
    bucket_capacity_for,
    grown_length,
    has_repeats,
)
from service.core.dynamic.backend import Backend, check_backend

MAX_SLOTS = 2**32 - 2
_S32 = np.uint64(32)


def as_keys(ids: np.ndarray) -> np.ndarray:
    """Integer ids as int64 keys: int64 as they are, uint64 as the int64 with the same bits,
    smaller integer types widened. Anything else is a TypeError naming the dtype."""
    ids = np.asarray(ids)
    if ids.dtype == np.uint64:
        return ids.view(np.int64)
    if ids.dtype.kind in "iu":
        return ids.astype(np.int64, copy=False)
    raise TypeError(f"keys must be an integer array, got dtype {ids.dtype}")


class KeyIndex:
    """A batch hash map from int64 keys to slots, with a free list of given-back slots."""

    def __init__(self, backend: str | None = None) -> None:
        self.backend: Backend = check_backend(backend)
        self._kernels: ModuleType = (
            keyindex_numba if self.backend == "numba" else keyindex_numpy
        )
        self._buckets = np.zeros(MIN_BUCKETS, dtype=np.uint64)  # (capacity,)
        self._slot_keys = np.zeros(0, dtype=np.int64)  # (slot capacity,) key of each slot
        self._free = np.zeros(0, dtype=np.int64)  # (free capacity,) a stack of free slots
        self._free_count = 0
        self._slot_count = 0  # slots ever handed out: every slot is below this
        self._size = 0

    # ---- reading ------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._size

    @property
    def slot_count(self) -> int:
        """Slots handed out so far: live or free, every slot is < slot_count. A table's row
        arrays need this many rows."""
        return self._slot_count

    @property
    def bucket_capacity(self) -> int:
        return int(self._buckets.size)

    @property
    def slot_keys(self) -> np.ndarray:
        """(slot_count,) the key of each slot (a view; meaningless for free slots)."""
        return self._slot_keys[: self._slot_count]

    @property
    def free_count(self) -> int:
        """Slots given back and not reused yet."""
        return self._free_count

    @property
    def free_slots(self) -> np.ndarray:
        """(free,) the free slots, the next to be reused last (a copy)."""
        return self._free[: self._free_count].copy()

    @property
    def nbytes(self) -> int:
        """Bytes held: buckets, slot keys and the free list (allocated, not just used)."""
        return int(self._buckets.nbytes + self._slot_keys.nbytes + self._free.nbytes)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """(n,) the slot of each key (int64 or uint64), -1 where the key has no slot."""
        keys = np.ascontiguousarray(as_keys(keys).ravel())
        slots: np.ndarray = self._kernels.lookup(self._buckets, self._slot_keys, keys)  # (n,)
        return slots

    def items(self, ascending: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """((size,) every key, ascending, (size,) its slot): for snapshots and exports. With
        ascending=False in bucket order (no sort: a caller holding a lock sorts after)."""
        entries = self._buckets[self._buckets != 0]  # (size,)
        slots = (entries & np.uint64(0xFFFFFFFF)).astype(np.int64) - 1
        keys = self._slot_keys[slots]
        if not ascending:
            return keys, slots
        order = np.argsort(keys, kind="stable")
        return keys[order], slots[order]

    def nbytes_after(self, new_keys: int, freed: int = 0) -> int:
        """At most `nbytes` once `new_keys` more keys (absent now) are inserted and then up to
        `freed` keys deleted: the memory budget asks before an insert allocates."""
        fresh = max(0, new_keys - self._free_count)
        buckets = bucket_capacity_for(self._size + new_keys, self._buckets.size)
        slot_keys = grown_length(self._slot_keys.size, self._slot_count + fresh)
        free = grown_length(self._free.size, self._free_count + freed)
        return 8 * (buckets + slot_keys + free)

    # ---- changing -----------------------------------------------------------------------

    def get_or_insert(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """((n,) the slot of each key, (n,) bool True where this call made it). Keys without
        a slot get new ones in order of first appearance; repeats share the slot."""
        keys = np.ascontiguousarray(as_keys(keys).ravel())
        slots = self.lookup(keys)  # (n,)
        created = np.zeros(keys.size, dtype=bool)
        missing = np.flatnonzero(slots < 0)  # (m,) repeats included: an upper bound of new keys
        if missing.size == 0:
            return slots, created
        self._make_room(missing.size)
        if self.backend == "numba":
            counters = np.array([self._free_count, self._slot_count, self._size], np.int64)
            keyindex_numba.insert_missing(self._buckets, self._slot_keys, self._free, counters,
                                          keys, missing, slots, created)
            self._free_count, self._slot_count, self._size = (int(c) for c in counters)
            return slots, created
        new_keys, first, inverse = np.unique(keys[missing], return_index=True,
                                             return_inverse=True)
        by_appearance = np.argsort(first, kind="stable")  # distinct new keys, first seen first
        new_slots = np.empty(new_keys.size, dtype=np.int64)
        new_slots[by_appearance] = self._add(new_keys[by_appearance])
        slots[missing] = new_slots[inverse]
        created[missing[first]] = True
        return slots, created

    def insert(self, keys: np.ndarray) -> np.ndarray:
        """(n,) new slots for keys that must be distinct and absent; otherwise a ValueError
        naming a key, with nothing changed."""
        keys = np.ascontiguousarray(as_keys(keys).ravel())
        ordered = np.sort(keys)
        repeated = ordered[1:][ordered[1:] == ordered[:-1]]
        if repeated.size:
            raise ValueError(f"key {int(repeated[0])} appears more than once")
        present = self.lookup(keys) >= 0
        if present.any():
            raise ValueError(f"key {int(keys[present][0])} is already in the index")
        self._make_room(keys.size)
        return self._add(keys)

    def delete(self, keys: np.ndarray) -> np.ndarray:
        """(n,) the slot each key had, now free, or -1 where it had none (or was repeated).
        Freed slots are reused by later inserts, the last freed first."""
        keys = np.ascontiguousarray(as_keys(keys).ravel())
        slots: np.ndarray = self._kernels.remove(self._buckets, self._slot_keys, keys)  # (n,)
        freed = slots[slots >= 0]
        self._size -= freed.size
        end = self._free_count + freed.size
        if end > self._free.size:
            grown = np.zeros(grown_length(self._free.size, end), dtype=np.int64)
            grown[: self._free_count] = self._free[: self._free_count]
            self._free = grown
        self._free[self._free_count : end] = freed
        self._free_count = end
        return slots

    def _make_room(self, most: int) -> None:
        """Room for up to `most` new keys: buckets below MAX_LOAD and slot_keys long enough.
        Both backends grow by this same upper bound, so they hold the same bytes."""
        fresh = max(0, most - self._free_count)
        if self._slot_count + fresh > MAX_SLOTS:
            raise MemoryError(f"a key index holds at most {MAX_SLOTS} slots")
        self._reserve(self._size + most)
        needed = self._slot_count + fresh
        if needed > self._slot_keys.size:
            grown = np.zeros(grown_length(self._slot_keys.size, needed), dtype=np.int64)
            grown[: self._slot_keys.size] = self._slot_keys
            self._slot_keys = grown

    def _add(self, keys: np.ndarray) -> np.ndarray:
        """Slots for distinct absent keys, room made: free ones first (top of the stack
        first), then new ones."""
        count = keys.size
        reused = min(count, self._free_count)
        fresh = count - reused
        slots = np.empty(count, dtype=np.int64)
        slots[:reused] = self._free[self._free_count - reused : self._free_count][::-1]
        slots[reused:] = np.arange(self._slot_count, self._slot_count + fresh)
        self._free_count -= reused
        self._slot_count += fresh
        self._slot_keys[slots] = keys
        self._kernels.place(self._buckets, _encode(keys, slots))
        self._size += count
        return slots

    def _reserve(self, count: int) -> None:
        """Grow (rebuild) the buckets if `count` keys would load them past MAX_LOAD."""
        capacity = bucket_capacity_for(count, self._buckets.size)
        if capacity == self._buckets.size:
            return
        entries = self._buckets[self._buckets != 0]
        if self.backend == "numpy":
            self._buckets = keyindex_numpy.build(capacity, entries)
        else:
            self._buckets = np.zeros(capacity, dtype=np.uint64)
            keyindex_numba.place(self._buckets, entries)

    # ---- snapshots ----------------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        """What `from_arrays` needs to rebuild this index exactly (same slots, same free list,
        so later inserts get the same slots): keys ascending, their slots, the free stack and
        the slot count."""
        keys, slots = self.items()
        return {
            "keys": keys, "slots": slots, "free_slots": self.free_slots,
            "slot_count": np.array(self._slot_count, dtype=np.int64),
        }

    @classmethod
    def from_arrays(
        cls,
        keys: np.ndarray,
        slots: np.ndarray | None = None,
        free_slots: np.ndarray | None = None,
        slot_count: int | None = None,
        backend: str | None = None,
    ) -> KeyIndex:
        """An index holding keys[i] at slots[i] (default: slot i), with `free_slots` as the
        free stack (default: every slot below slot_count that holds no key, highest reused
        first) and `slot_count` (default: one past the highest slot). Inconsistent arrays
        (repeated keys or slots, a slot out of range, a free slot that holds a key) are a
        ValueError naming the problem."""
        index = cls(backend)
        keys = np.ascontiguousarray(as_keys(keys).ravel())
        slots = np.arange(keys.size) if slots is None else np.asarray(slots, dtype=np.int64).ravel()
        if slots.size != keys.size:
            raise ValueError(f"{keys.size} keys but {slots.size} slots")
        top = int(slots.max()) + 1 if slots.size else 0
        count = top if slot_count is None else int(slot_count)
        if count < top or count > MAX_SLOTS:
            raise ValueError(f"slot_count {count} must be in [{top}, {MAX_SLOTS}]")
        if has_repeats(keys):
            raise ValueError("keys repeat")
        if slots.size and (has_repeats(slots) or slots.min() < 0):
            raise ValueError("slots repeat or are negative")
        used = np.zeros(count, dtype=bool)
        used[slots] = True
        if free_slots is None:
            free = np.flatnonzero(~used)[::-1].copy()
        else:
            free = np.asarray(free_slots, dtype=np.int64).ravel()
            if free.size and (free.min() < 0 or free.max() >= count or used[free].any()
                              or has_repeats(free)):
                raise ValueError("free_slots repeat, hold a key or are out of range")
        index._slot_count = count
        index._slot_keys = np.zeros(count, dtype=np.int64)
        index._slot_keys[slots] = keys
        index._free = free.copy()
        index._free_count = free.size
        index._size = keys.size
        capacity = bucket_capacity_for(keys.size)
        if index.backend == "numpy":
            index._buckets = keyindex_numpy.build(capacity, _encode(keys, slots))
        else:
            index._buckets = np.zeros(capacity, dtype=np.uint64)
            keyindex_numba.place(index._buckets, _encode(keys, slots))
        return index


def _encode(keys: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """(n,) uint64 buckets: (tag << 32) | (slot + 1)."""
    return (keyindex_numpy.tags_of(keys) << _S32) | (slots.astype(np.uint64) + np.uint64(1))
