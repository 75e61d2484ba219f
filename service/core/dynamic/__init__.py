"""Building blocks of dynamic tables (any 64-bit key, rows made on first use, admission,
eviction): the key index, the initial row of a key, admission counting, eviction bookkeeping.
Each is usable and tested on its own; the dynamic table assembles them."""

from service.core.dynamic.keyindex import KeyIndex, as_keys

__all__ = ["KeyIndex", "as_keys"]
