"""Compile (or load from numba's cache) every dynamic-table kernel before the first request.

numba compiles a kernel at its first call for each argument type; `cache=True` stores the
machine code beside the module, so later processes only load it. Calling `warm_up()` at
start-up moves either cost out of the first request that touches a dynamic table.
"""

from __future__ import annotations

import numpy as np

from service.core.dynamic.admission import AdmissionCounter
from service.core.dynamic.backend import check_backend
from service.core.dynamic.eviction import EvictionTracker
from service.core.dynamic.initial_rows import initial_rows
from service.core.dynamic.keyindex import KeyIndex
from service.core.initializers import InitSpec


def warm_up(backend: str | None = None) -> None:
    """Run every kernel once on a few keys, with each argument type a table uses."""
    backend = check_backend(backend)
    keys = np.array([3, -1, 2**62, 5], dtype=np.int64)
    index = KeyIndex(backend)
    slots, _ = index.get_or_insert(keys)
    index.lookup(keys)
    index.delete(keys[:1])
    KeyIndex.from_arrays(keys[1:], backend=backend)
    for policy, ttl in (("lru", 1), ("lfu", None)):
        tracker = EvictionTracker(index, policy, capacity=1, ttl_steps=ttl)  # type: ignore[arg-type]
        tracker.touch(index.lookup(keys[1:]), 1)
        tracker.remove(index.lookup(keys[1:2]))
        tracker.evict(2)
    AdmissionCounter(admit_after=2, max_candidates=2, backend=backend).record(keys)
    for kind in ("normal", "uniform"):
        for dtype in (np.float32, np.float64):
            initial_rows(keys, 3, np.dtype(dtype), InitSpec(kind), 0, backend)
