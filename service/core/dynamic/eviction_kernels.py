"""The loops of eviction bookkeeping: a recency list and a frequency heap over row slots.

- The recency list links the live slots in the order (last update step, key): a touch unlinks
  the batch and appends it (sorted by key) at the tail, merging with rows already touched at
  the same step; the head is the least recently updated row. O(1) per row, plus the size of
  the tail's same-step group when a step is touched twice.
- The frequency heap is a binary min-heap of slots ordered by (update count, key), with each
  slot's position kept so that a touched row sifts down and any row can be removed in
  O(log rows).

Sequential by nature (pointer chasing), so there is one implementation: compiled by numba, or
run as plain Python where numba is missing (NUMBA_DISABLE_JIT=1 runs the same code that way;
the tests do, against the same oracle). `ends` is [head, tail], `counts` is [live rows].
"""

from __future__ import annotations

import numpy as np

from service.core.dynamic.backend import inline_kernel, kernel


@inline_kernel
def _unlink(prev: np.ndarray, next_: np.ndarray, ends: np.ndarray, slot: int) -> None:
    before, after = prev[slot], next_[slot]
    if before >= 0:
        next_[before] = after
    else:
        ends[0] = after
    if after >= 0:
        prev[after] = before
    else:
        ends[1] = before
    prev[slot] = -1
    next_[slot] = -1


@inline_kernel
def _append(prev: np.ndarray, next_: np.ndarray, ends: np.ndarray, slot: int) -> None:
    tail = ends[1]
    prev[slot] = tail
    next_[slot] = -1
    if tail >= 0:
        next_[tail] = slot
    else:
        ends[0] = slot
    ends[1] = slot


@inline_kernel
def _less(updates: np.ndarray, keys: np.ndarray, a: int, b: int) -> bool:
    less: bool = updates[a] < updates[b] or (updates[a] == updates[b] and keys[a] < keys[b])
    return less


@inline_kernel
def _sift_up(heap: np.ndarray, position: np.ndarray, updates: np.ndarray, keys: np.ndarray,
             i: int) -> None:
    slot = heap[i]
    while i > 0:
        parent = (i - 1) // 2
        if not _less(updates, keys, slot, heap[parent]):
            break
        heap[i] = heap[parent]
        position[heap[i]] = i
        i = parent
    heap[i] = slot
    position[slot] = i


@inline_kernel
def _sift_down(heap: np.ndarray, position: np.ndarray, updates: np.ndarray, keys: np.ndarray,
               i: int, size: int) -> None:
    slot = heap[i]
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and _less(updates, keys, heap[child + 1], heap[child]):
            child += 1
        if not _less(updates, keys, heap[child], slot):
            break
        heap[i] = heap[child]
        position[heap[i]] = i
        i = child
    heap[i] = slot
    position[slot] = i


@kernel
def touch(last_step: np.ndarray, updates: np.ndarray, keys: np.ndarray, batch: np.ndarray,
          step: int, prev: np.ndarray, next_: np.ndarray, ends: np.ndarray, heap: np.ndarray,
          position: np.ndarray, counts: np.ndarray, has_list: bool, has_heap: bool) -> None:
    """Record one update at `step` of each slot in `batch` (distinct, sorted by key)."""
    if has_list:
        for slot in batch:
            if last_step[slot] >= 0:
                _unlink(prev, next_, ends, slot)
        same_step = 0  # rows already touched at this step sit at the tail, in key order
        slot = ends[1]
        while slot >= 0 and last_step[slot] == step:
            same_step += 1
            slot = prev[slot]
        group = np.empty(same_step, dtype=np.int64)
        for i in range(same_step - 1, -1, -1):
            group[i] = ends[1]
            _unlink(prev, next_, ends, ends[1])
        i = j = 0
        while i < same_step or j < batch.size:
            if j == batch.size or (i < same_step and keys[group[i]] < keys[batch[j]]):
                _append(prev, next_, ends, group[i])
                i += 1
            else:
                _append(prev, next_, ends, batch[j])
                j += 1
    for slot in batch:
        new = last_step[slot] < 0
        last_step[slot] = step
        if new:
            updates[slot] = 1
            counts[0] += 1
        else:
            updates[slot] += 1
        if has_heap:
            if new:
                size = counts[0]
                heap[size - 1] = slot
                _sift_up(heap, position, updates, keys, size - 1)
            else:
                _sift_down(heap, position, updates, keys, position[slot], counts[0])


@inline_kernel
def _remove(slot: int, last_step: np.ndarray, updates: np.ndarray, keys: np.ndarray,
            prev: np.ndarray, next_: np.ndarray, ends: np.ndarray, heap: np.ndarray,
            position: np.ndarray, counts: np.ndarray, has_list: bool, has_heap: bool) -> None:
    if has_list:
        _unlink(prev, next_, ends, slot)
    if has_heap:
        i = position[slot]
        size = counts[0] - 1
        last = heap[size]
        position[slot] = -1
        if i != size:
            heap[i] = last
            position[last] = i
            _sift_up(heap, position, updates, keys, i)
            _sift_down(heap, position, updates, keys, position[last], size)
    last_step[slot] = -1
    updates[slot] = 0
    counts[0] -= 1


@kernel
def remove(slots: np.ndarray, last_step: np.ndarray, updates: np.ndarray, keys: np.ndarray,
           prev: np.ndarray, next_: np.ndarray, ends: np.ndarray, heap: np.ndarray,
           position: np.ndarray, counts: np.ndarray, has_list: bool, has_heap: bool) -> None:
    """Stop tracking each live slot of `slots` (others are skipped)."""
    for slot in slots:
        if last_step[slot] >= 0:
            _remove(slot, last_step, updates, keys, prev, next_, ends, heap, position, counts,
                    has_list, has_heap)


@kernel
def count_expired(last_step: np.ndarray, next_: np.ndarray, ends: np.ndarray,
                  threshold: int) -> int:
    """How many rows at the head of the recency list were last updated at or before
    `threshold`: the rows a ttl removes. Walks only those rows."""
    count = 0
    slot = ends[0]
    while slot >= 0 and last_step[slot] <= threshold:
        count += 1
        slot = next_[slot]
    return count


@kernel
def evict(out: np.ndarray, expired: int, target: int, by_recency: bool,
          last_step: np.ndarray, updates: np.ndarray, keys: np.ndarray, prev: np.ndarray,
          next_: np.ndarray, ends: np.ndarray, heap: np.ndarray, position: np.ndarray,
          counts: np.ndarray, has_list: bool, has_heap: bool) -> None:
    """Remove the `expired` rows at the head of the recency list, then the least recently
    (by_recency) or least often updated rows while more than `target` are live (target < 0:
    no limit); write the removed slots to `out` in that order."""
    n = 0
    for _ in range(expired):
        slot = ends[0]
        _remove(slot, last_step, updates, keys, prev, next_, ends, heap, position, counts,
                has_list, has_heap)
        out[n] = slot
        n += 1
    while target >= 0 and counts[0] > target:
        slot = ends[0] if by_recency else heap[0]
        _remove(slot, last_step, updates, keys, prev, next_, ends, heap, position, counts,
                has_list, has_heap)
        out[n] = slot
        n += 1
