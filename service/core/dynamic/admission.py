"""Admission counting: a key gets a row once it has appeared in `admit_after` pushes.

Counts are kept only for candidates (keys not admitted yet), in a table capped at
`max_candidates` keys: a KeyIndex of the candidates and an lru EvictionTracker whose "step" is
the push number and whose update count is the number of pushes a key appeared in. When a push
brings more candidates than the cap, the stalest candidates are forgotten (least recently
seen, ties to the smaller key), so a long tail of one-off keys costs at most max_candidates
entries, never more memory.

Error bound (exact counts, bounded forgetting):
- never early: a count is never more than the pushes the key appeared in, so no key is
  admitted before its admit_after-th push;
- late only after forgetting: a key is forgotten only when max_candidates other candidates
  were seen at or after its last appearance (in the same push with a larger key, or in later
  pushes). So a key whose consecutive appearances are separated by fewer than max_candidates
  distinct other not-yet-admitted keys is admitted exactly at its admit_after-th push;
  otherwise its count restarts from that appearance.

A count-min sketch was the other choice: fixed memory too, but it overestimates (keys admitted
early, more so as the stream grows) and is never exact; these counts are exact or restart.

The caller passes each push's distinct keys that have no row and no pending gradient (a key
admitted but not yet applied is the caller's to remember), asks `would_admit` while the push
may still be refused, and calls `record` once it is accepted:

    counter = AdmissionCounter(admit_after=3, max_candidates=1_000_000)
    admitted = counter.record(keys)     # (n,) bool: these keys now get rows
"""

from __future__ import annotations

import numpy as np

from service.core.dynamic.eviction import EvictionTracker
from service.core.dynamic.keyindex import KeyIndex, as_keys


class AdmissionCounter:
    """Per-key push counts of not-yet-admitted keys, at most max_candidates of them."""

    def __init__(self, admit_after: int = 1, max_candidates: int = 1_000_000,
                 backend: str | None = None) -> None:
        if admit_after < 1:
            raise ValueError(f"admit_after must be >= 1, got {admit_after}")
        if max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
        self.admit_after = admit_after
        self.max_candidates = max_candidates
        self.pushes = 0  # pushes recorded: the clock of staleness
        self.forgotten = 0  # candidates dropped by the cap (for metrics)
        self._index = KeyIndex(backend)
        self._seen = EvictionTracker(self._index, "lru", capacity=max_candidates)

    def __len__(self) -> int:
        """Candidates being counted."""
        return len(self._index)

    @property
    def nbytes(self) -> int:
        return self._index.nbytes + self._seen.nbytes

    def nbytes_after(self, new_keys: int) -> int:
        """At most `nbytes` once `new_keys` more candidates are recorded (the memory budget
        asks before a push records them): inserted, then admitted or forgotten ones freed."""
        index = self._index
        freed = new_keys + max(0, len(index) + new_keys - self.max_candidates)
        return index.nbytes_after(new_keys, freed) + self._seen.nbytes_after(
            index.slot_count + max(0, new_keys - index.free_count))

    def counts(self, keys: np.ndarray) -> np.ndarray:
        """(n,) pushes each key appeared in so far, 0 for keys not being counted."""
        slots = self._index.lookup(keys)  # (n,)
        counts = np.zeros(slots.size, dtype=np.int64)
        found = slots >= 0
        counts[found] = self._seen.updates(slots[found])
        return counts

    def would_admit(self, keys: np.ndarray) -> np.ndarray:
        """(n,) bool: which keys `record(keys)` would admit now. Changes nothing."""
        if self.admit_after == 1:
            return np.ones(np.asarray(keys).size, dtype=bool)
        return self.counts(keys) + 1 >= self.admit_after

    def record(self, keys: np.ndarray) -> np.ndarray:
        """Count one push of `keys` (a key repeated in it counts once); (n,) bool: the keys
        admitted by this push, which are no longer counted. Then forget the stalest
        candidates beyond max_candidates."""
        keys = as_keys(keys).ravel()
        self.pushes += 1
        if self.admit_after == 1:
            return np.ones(keys.size, dtype=bool)
        distinct, inverse = np.unique(keys, return_inverse=True)
        slots, _ = self._index.get_or_insert(distinct)
        self._seen.touch(slots, self.pushes)
        admitted = self._seen.updates(slots) >= self.admit_after  # (distinct,)
        self._seen.remove(slots[admitted])
        self._index.delete(distinct[admitted])
        stale = self._seen.evict(self.pushes)
        self.forgotten += stale.size
        self._index.delete(self._index.slot_keys[stale])
        return admitted[inverse]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Everything to continue exactly: candidate keys (ascending), their counts and last
        push, the push clock and the forgotten total."""
        keys, slots = self._index.items()
        return {"keys": keys, "counts": self._seen.updates(slots),
                "last_push": self._seen.last_step(slots),
                "pushes": np.array(self.pushes, dtype=np.int64),
                "forgotten": np.array(self.forgotten, dtype=np.int64)}

    @classmethod
    def from_arrays(cls, admit_after: int, max_candidates: int, keys: np.ndarray,
                    counts: np.ndarray, last_push: np.ndarray, pushes: int, forgotten: int = 0,
                    backend: str | None = None) -> AdmissionCounter:
        """The counter `to_arrays` described (with possibly other limits: a smaller
        max_candidates forgets the stalest at the next push)."""
        counter = cls(admit_after, max_candidates, backend)
        counter._index = KeyIndex.from_arrays(keys, backend=backend)
        counter._seen = EvictionTracker.from_arrays(
            counter._index, "lru", max_candidates, None, np.arange(np.asarray(keys).size),
            last_push, counts, int(pushes))
        counter.pushes = int(pushes)
        counter.forgotten = int(forgotten)
        return counter
