"""Dynamic tables (any 64-bit key, rows made on first use, admission, eviction): DynamicTable
(table) assembles building blocks that are each usable and tested on their own:

- KeyIndex          int64 key -> row slot, batched, with a free list (keyindex)
- initial_rows      a key's initial row, a pure function of (seed, init spec, key)
- AdmissionCounter  push counts of not-yet-admitted keys, capped (admission)
- EvictionTracker   last update step and count per row; ttl, lru and lfu victims (eviction)
- backend           numba or numpy: the module-level choice of kernels
- warm_up           compiles (or loads from cache) every kernel before the first request
- DynamicSpec       a table's settings: capacity, admit_after, evict, ttl_steps (spec)
"""

from service.core.dynamic.admission import AdmissionCounter
from service.core.dynamic.eviction import EvictionTracker
from service.core.dynamic.initial_rows import initial_rows
from service.core.dynamic.keyindex import KeyIndex, as_keys
from service.core.dynamic.spec import DynamicSpec, check_spec
from service.core.dynamic.table import DynamicTable
from service.core.dynamic.warmup import warm_up

__all__ = [
    "AdmissionCounter", "DynamicSpec", "DynamicTable", "EvictionTracker", "KeyIndex", "as_keys",
    "check_spec", "initial_rows", "warm_up"]
