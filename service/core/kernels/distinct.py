"""Where each pushed id goes: the distinct ids of a push, and positions in a sorted index.

`sorted_distinct(ids)` is `np.unique(ids, return_inverse=True)`: the distinct ids, sorted, and
for every id its position among them (`rows[slot_of_id] == ids`). Any int64 id, negatives and
the extremes included; nothing the size of a table, only of the push. Compiled, sort-based:

- when the ids span less than 2**(63 - b) values (b = the bits of a position in the push; any
  fixed table's ids do), each id and its position are packed into one int64,
  `(id - lowest) << b | position`, and sorted with numpy's SIMD sort; one pass over the sorted
  keys then numbers the runs and writes each position's slot;
- otherwise (hashed keys spread over the whole int64 range) a stable argsort of the ids, and the
  same pass.

np.unique (the numpy twin) argsorts the ids and builds the inverse with several numpy passes; a
binary search of every id among the distinct ones mispredicts a branch at every level and is
slower still for large pushes (bench/apply_cost.py --part reduce measures them). A hash map
would be faster still; the service's int64 -> slot hash map is service.core.keyindex (dynamic
tables), not a second one here.

`search_sorted(keys, needles)` is `np.searchsorted(keys, needles)` (side="left") for needles
sorted ascending (the pending gradient's use: a push's distinct rows into its sorted index):
a galloping search that starts each needle where the previous one ended, so k needles into n
keys cost O(k log(n / k)) instead of k full binary searches.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from service.core.kernels.backend import Kernel, array


# -- search_sorted ---------------------------------------------------------------------------------
def _search_loop(keys: np.ndarray, needles: np.ndarray) -> np.ndarray:
    count = keys.shape[0]
    positions = np.empty(needles.shape[0], dtype=np.int64)
    low = 0  # every key before `low` is < the previous needle, so < this one
    for j in range(needles.shape[0]):
        needle = needles[j]
        step = 1  # gallop: keys[low + step - 1] >= needle bounds the search
        while low + step <= count and keys[low + step - 1] < needle:
            low += step
            step *= 2
        high = min(low + step - 1, count)
        while low < high:  # then bisect [low, high)
            middle = (low + high) >> 1
            if keys[middle] < needle:
                low = middle + 1
            else:
                high = middle
        positions[j] = low
    return positions


def _search_numpy(keys: np.ndarray, needles: np.ndarray) -> np.ndarray:
    return np.searchsorted(keys, needles).astype(np.int64, copy=False)


def _search_signatures(types: ModuleType) -> list[Any]:
    ids = array(types, "int64", 1, readonly=True)
    return [array(types, "int64", 1)(ids, ids)]


search_sorted = Kernel("search_sorted", numpy=_search_numpy, loop=_search_loop,
                       signatures=_search_signatures)


# -- sorted_distinct -------------------------------------------------------------------------------
def _pack_loop(ids: np.ndarray, shift: int) -> tuple[np.ndarray, int, bool]:
    """(id - lowest) << shift | position for every id, the lowest id, and whether it fits."""
    count = ids.shape[0]
    lowest = ids[0]
    highest = ids[0]
    for j in range(count):
        lowest = min(lowest, ids[j])
        highest = max(highest, ids[j])
    packed = np.empty(count, dtype=np.int64)
    # the span must fit in 63 - shift bits; computed so that it cannot overflow int64
    fits = lowest >= 0 or highest < lowest + (np.int64(1) << (63 - shift))
    if fits:
        fits = highest - lowest < (np.int64(1) << (63 - shift))
    if fits:
        for j in range(count):
            packed[j] = ((ids[j] - lowest) << shift) | j
    return packed, lowest, fits


def _unpack_loop(packed: np.ndarray, lowest: int, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """From sorted packed keys: the distinct ids and each position's slot among them."""
    count = packed.shape[0]
    mask = (np.int64(1) << shift) - 1
    rows = np.empty(count, dtype=np.int64)
    slot_of_id = np.empty(count, dtype=np.int64)
    distinct = 0
    previous = np.int64(-1)
    for i in range(count):
        key = packed[i]
        offset = key >> shift
        if i == 0 or offset != previous:
            rows[distinct] = offset + lowest
            distinct += 1
            previous = offset
        slot_of_id[key & mask] = distinct - 1
    return rows[:distinct], slot_of_id


def _runs_loop(ids: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From ids and an order that sorts them: the distinct ids and each position's slot."""
    count = ids.shape[0]
    rows = np.empty(count, dtype=np.int64)
    slot_of_id = np.empty(count, dtype=np.int64)
    distinct = 0
    for i in range(count):
        position = order[i]
        if i == 0 or ids[position] != rows[distinct - 1]:
            rows[distinct] = ids[position]
            distinct += 1
        slot_of_id[position] = distinct - 1
    return rows[:distinct], slot_of_id


def _distinct_numpy(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, slot_of_id = np.unique(ids, return_inverse=True)
    return rows, slot_of_id.reshape(-1).astype(np.int64, copy=False)


def _distinct_signatures(types: ModuleType) -> tuple[list[Any], ...]:
    ids = array(types, "int64", 1, readonly=True)
    pair = types.Tuple((array(types, "int64", 1), array(types, "int64", 1)))
    return ([types.Tuple((array(types, "int64", 1), types.int64, types.boolean))(ids, types.int64)],
            [pair(ids, types.int64, types.int64)],
            [pair(ids, ids)])


def _distinct_around(pack: Any, unpack: Any, runs: Any) -> Callable[[np.ndarray], Any]:
    def sorted_distinct(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(ids) == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        shift = max(1, (len(ids) - 1).bit_length())  # bits of a position
        packed, lowest, fits = pack(ids, shift)
        if fits:
            packed.sort()
            distinct: tuple[np.ndarray, np.ndarray] = unpack(packed, lowest, shift)
            return distinct
        distinct = runs(ids, np.argsort(ids, kind="stable"))
        return distinct

    return sorted_distinct


sorted_distinct = Kernel("sorted_distinct", numpy=_distinct_numpy,
                         loop=(_pack_loop, _unpack_loop, _runs_loop),
                         signatures=_distinct_signatures, around=_distinct_around)

__all__ = ["search_sorted", "sorted_distinct"]
