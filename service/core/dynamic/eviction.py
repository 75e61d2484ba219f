"""Eviction bookkeeping of a dynamic table: which rows to remove after a step.

Per live row (by slot): the step it was last updated and how many times it was updated. After
each step, `evict(step)` removes

1. with `ttl_steps`: every row not updated in the last ttl_steps steps (last step <= step -
   ttl_steps), and then
2. with `capacity`: while more rows than capacity are live, the least recently updated row
   (`lru`: smallest last step) or the least often updated one (`lfu`: smallest count), ties
   broken by the smaller key.

The ttl goes first, so a row it removes anyway never costs a capacity eviction of another.

Cost, with n live rows, u rows touched in a step and k rows evicted: the recency list (lru, or
any policy with a ttl) is O(u) per touch and O(1) per eviction; the frequency heap (lfu) is
O(u log n) per touch and O(log n) per eviction. Nothing walks the table: eviction costs O(k)
(lru, ttl) or O(k log n) (lfu). A step touched twice (an apply, then weights set at the same
step) re-merges the rows of that step already at the tail, O(rows of that step).

Memory per slot: last step and count (int64 each, 16 bytes), plus 8 bytes for the list
(int32 prev, next) and 8 for the heap (int32 heap entry, position) where the policy needs them:
24 to 32 bytes (`nbytes`). Slots are limited to 2^31 - 1.

    tracker = EvictionTracker(index, "lru", capacity=1000, ttl_steps=None)
    tracker.touch(slots, step)              # rows updated (or created) at `step`
    gone = tracker.evict(step)              # (k,) slots to remove, in eviction order
    index.delete(index.slot_keys[gone])     # the caller frees them (after reading their keys)

Not thread-safe: the table calls it under its lock. The keys for tie-breaking are read from
the KeyIndex's slot_keys, so evict before deleting the keys from the index.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from service.core.dynamic import eviction_kernels as kernels
from service.core.dynamic.arrays import grown_length, has_repeats, sorted_distinct
from service.core.dynamic.keyindex import KeyIndex

Policy = Literal["lru", "lfu"]
MAX_TRACKED_SLOTS = 2**31 - 1


class EvictionTracker:
    """Last update step and update count of each live row, and the order they leave in."""

    def __init__(self, index: KeyIndex, policy: Policy = "lru", capacity: int | None = None,
                 ttl_steps: int | None = None) -> None:
        if policy not in ("lru", "lfu"):
            raise ValueError(f"evict must be 'lru' or 'lfu', got {policy!r}")
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity must be >= 1 or null, got {capacity}")
        if ttl_steps is not None and ttl_steps < 1:
            raise ValueError(f"ttl_steps must be >= 1 or null, got {ttl_steps}")
        self.index = index
        self.policy: Policy = policy
        self.capacity = capacity
        self.ttl_steps = ttl_steps
        self._has_list = policy == "lru" or ttl_steps is not None
        self._has_heap = policy == "lfu"
        self._last_step = np.zeros(0, dtype=np.int64)  # (slots,) -1 where not live
        self._updates = np.zeros(0, dtype=np.int64)  # (slots,) 0 where not live
        self._prev = np.zeros(0, dtype=np.int32)  # (slots,) recency list links, -1 = none
        self._next = np.zeros(0, dtype=np.int32)
        self._heap = np.zeros(0, dtype=np.int32)  # (slots,) the heap in its first `rows`
        self._position = np.zeros(0, dtype=np.int32)  # (slots,) each slot's place in it
        self._ends = np.array([-1, -1], dtype=np.int64)  # head, tail of the recency list
        self._counts = np.zeros(1, dtype=np.int64)  # live rows
        self.last_touched_step = -1

    def __len__(self) -> int:
        return int(self._counts[0])

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self._arrays())

    def _arrays(self) -> list[np.ndarray]:
        arrays: list[np.ndarray] = [self._last_step, self._updates]
        if self._has_list:
            arrays += [self._prev, self._next]
        if self._has_heap:
            arrays += [self._heap, self._position]
        return arrays

    def last_step(self, slots: np.ndarray) -> np.ndarray:
        """(n,) the step each slot was last updated at, -1 where it holds no live row."""
        return self._last_step[np.asarray(slots, dtype=np.int64)]

    def updates(self, slots: np.ndarray) -> np.ndarray:
        """(n,) how many steps updated each slot's row, 0 where it holds no live row."""
        return self._updates[np.asarray(slots, dtype=np.int64)]

    def nbytes_after(self, slot_count: int) -> int:
        """`nbytes` once the per-slot arrays cover slot_count slots (what touch grows to)."""
        per_slot = sum(array.itemsize for array in self._arrays())
        return grown_length(self._last_step.size, slot_count) * per_slot

    def _fit(self, slot_count: int) -> None:
        """Grow the per-slot arrays to cover slot_count slots (new ones not live)."""
        if slot_count > MAX_TRACKED_SLOTS:
            raise MemoryError(f"eviction bookkeeping tracks at most {MAX_TRACKED_SLOTS} slots")
        size = self._last_step.size
        if slot_count <= size:
            return
        length = grown_length(size, slot_count)
        fills = {"_last_step": -1, "_updates": 0, "_prev": -1, "_next": -1, "_heap": -1,
                 "_position": -1}
        for name, fill in fills.items():
            old = getattr(self, name)
            if name in ("_prev", "_next") and not self._has_list:
                continue
            if name in ("_heap", "_position") and not self._has_heap:
                continue
            grown = np.full(length, fill, dtype=old.dtype)
            grown[:size] = old
            setattr(self, name, grown)

    def _call_arguments(self) -> tuple[np.ndarray, ...]:
        # The kernels read the keys of live slots only, all below the index's slot_count.
        return (self._last_step, self._updates, self.index.slot_keys, self._prev, self._next,
                self._ends, self._heap, self._position, self._counts)

    def touch(self, slots: np.ndarray, step: int) -> None:
        """Record an update at `step` of each slot's row (a slot with no live row starts one,
        count 1). Repeats count once. Slots whose keys ascend (np.unique's order, as a push
        has them) skip a sort. Steps never go back: a smaller step than the last one
        touched is a ValueError, with nothing changed."""
        if step < self.last_touched_step:
            raise ValueError(f"step {step} is before the last touched step "
                             f"{self.last_touched_step}")
        slots = np.asarray(slots, dtype=np.int64).ravel()  # (u,)
        if slots.size == 0:
            return
        low, high = int(slots.min()), int(slots.max())
        if low < 0 or high >= self.index.slot_count:
            raise ValueError(f"slot {low if low < 0 else high} is not a slot of the index "
                             f"(slot_count {self.index.slot_count})")
        self._fit(self.index.slot_count)
        last_step, updates, keys, prev, next_, ends, heap, position, counts = (
            self._call_arguments())
        batch_keys = keys[slots]  # (u,)
        if not (batch_keys[1:] > batch_keys[:-1]).all():  # sorted, distinct keys skip the sort
            slots = sorted_distinct(slots)
            slots = slots[np.argsort(keys[slots], kind="stable")]
        batch = slots
        kernels.touch(last_step, updates, keys, batch, step, prev, next_, ends, heap, position,
                      counts, self._has_list, self._has_heap)
        self.last_touched_step = step

    def remove(self, slots: np.ndarray) -> None:
        """Stop tracking these slots' rows (rows deleted by other means than `evict`)."""
        slots = np.asarray(slots, dtype=np.int64).ravel()
        slots = slots[(slots >= 0) & (slots < self._last_step.size)]
        last_step, updates, keys, prev, next_, ends, heap, position, counts = (
            self._call_arguments())
        kernels.remove(slots, last_step, updates, keys, prev, next_, ends, heap, position,
                       counts, self._has_list, self._has_heap)

    def evict(self, step: int) -> np.ndarray:
        """(k,) the slots whose rows leave after `step` (ttl first, then capacity), in the
        order they left; they are no longer tracked. Costs O(k) (lru) or O(k log n) (lfu)."""
        last_step, updates, keys, prev, next_, ends, heap, position, counts = (
            self._call_arguments())
        expired = 0
        if self.ttl_steps is not None:
            expired = int(kernels.count_expired(last_step, next_, ends, step - self.ttl_steps))
        target = -1 if self.capacity is None else self.capacity
        over = 0 if target < 0 else max(0, len(self) - expired - target)
        out = np.empty(expired + over, dtype=np.int64)
        kernels.evict(out, expired, target, self.policy == "lru", last_step, updates, keys,
                      prev, next_, ends, heap, position, counts, self._has_list, self._has_heap)
        return out

    # ---- snapshots ----------------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Live slots (ascending) with their last step and count; with the settings, all that
        `from_arrays` needs: the orders are functions of these values and the keys."""
        live = np.flatnonzero(self._last_step >= 0)
        return {"slots": live, "last_step": self._last_step[live],
                "updates": self._updates[live],
                "last_touched_step": np.array(self.last_touched_step, dtype=np.int64)}

    @classmethod
    def from_arrays(cls, index: KeyIndex, policy: Policy, capacity: int | None,
                    ttl_steps: int | None, slots: np.ndarray, last_step: np.ndarray,
                    updates: np.ndarray, last_touched_step: int = -1) -> EvictionTracker:
        """A tracker of `index`'s rows at `slots` with these last steps (>= 0) and counts
        (>= 1); the recency list and heap are rebuilt by sorting."""
        tracker = cls(index, policy, capacity, ttl_steps)
        slots = np.asarray(slots, dtype=np.int64).ravel()
        last_step = np.asarray(last_step, dtype=np.int64).ravel()
        updates = np.asarray(updates, dtype=np.int64).ravel()
        if not slots.size == last_step.size == updates.size:
            raise ValueError("slots, last_step and updates differ in length")
        if slots.size and (has_repeats(slots) or slots.min() < 0
                           or slots.max() >= index.slot_count):
            raise ValueError("slots repeat or are not slots of the index")
        if slots.size and (last_step.min() < 0 or updates.min() < 1):
            raise ValueError("last_step must be >= 0 and updates >= 1")
        tracker._fit(index.slot_count)
        tracker._last_step[slots] = last_step
        tracker._updates[slots] = updates
        tracker._counts[0] = slots.size
        tracker.last_touched_step = int(last_touched_step)
        keys = index.slot_keys[slots]
        if tracker._has_list and slots.size:
            order = slots[np.lexsort((keys, last_step))]  # (n,) by (last step, key)
            tracker._prev[order[1:]] = order[:-1]
            tracker._next[order[:-1]] = order[1:]
            tracker._ends[:] = order[0], order[-1]
        if tracker._has_heap:
            order = slots[np.lexsort((keys, updates))]  # sorted by (count, key): a heap
            tracker._heap[: order.size] = order
            tracker._position[order] = np.arange(order.size)
        return tracker
