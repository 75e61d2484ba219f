"""The building blocks assembled as the dynamic table will assemble them (admission on push,
rows made on apply, SGD, eviction after the step), against a dict-of-rows model of the
issue's contract: proof that the pieces fit, and a sketch for the integration."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.dynamic import AdmissionCounter, EvictionTracker, KeyIndex
from tests.core.dynamic.model import DIM, DTYPE, LR, ContractModel, initial


class SketchTable:
    """What the integration builds: slot-indexed rows behind a KeyIndex."""

    def __init__(self, admit_after: int, policy: str, capacity: int | None,
                 ttl: int | None) -> None:
        self.index = KeyIndex()
        self.tracker = EvictionTracker(self.index, policy, capacity, ttl)  # type: ignore[arg-type]
        self.admission = AdmissionCounter(admit_after)
        self.weights = np.zeros((0, DIM), DTYPE)  # (slot_count, dim)
        self.pending: dict[int, np.ndarray] = {}
        self.step = 0

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        slots = self.index.lookup(keys)  # (n,)
        found = slots >= 0
        out = np.empty((keys.size, DIM), DTYPE)
        out[found] = self.weights[slots[found]]
        out[~found] = initial(keys[~found])
        return out

    def push(self, ids: np.ndarray, grads: np.ndarray) -> int:
        distinct = np.unique(ids)
        known = (self.index.lookup(distinct) >= 0) | np.isin(distinct, list(self.pending))
        admitted = set(distinct[known].tolist())
        admitted |= set(distinct[~known][self.admission.record(distinct[~known])].tolist())
        dropped = 0
        for key, grad in zip(ids.tolist(), grads, strict=True):
            if key in admitted:
                self.pending[key] = self.pending.get(key, np.zeros(DIM, DTYPE)) + grad
            else:
                dropped += 1
        return dropped

    def apply(self) -> None:
        if not self.pending:
            return
        self.step += 1
        keys = np.array(sorted(self.pending), dtype=np.int64)
        slots, created = self.index.get_or_insert(keys)
        if self.index.slot_count > len(self.weights):
            grown = np.zeros((self.index.slot_count, DIM), DTYPE)
            grown[: len(self.weights)] = self.weights
            self.weights = grown
        self.weights[slots[created]] = initial(keys[created])
        self.weights[slots] -= LR * np.stack([self.pending[k] for k in keys.tolist()])
        self.pending.clear()
        self.tracker.touch(slots, self.step)
        gone = self.tracker.evict(self.step)
        self.index.delete(self.index.slot_keys[gone])


@pytest.mark.parametrize(("admit_after", "policy", "capacity", "ttl"),
                         [(1, "lru", None, None), (2, "lru", 12, None), (3, "lfu", 10, 5),
                          (1, "lfu", 6, None), (2, "lru", None, 3)])
def test_the_blocks_assemble_into_the_contract(admit_after: int, policy: str,
                                               capacity: int | None, ttl: int | None) -> None:
    rng = np.random.default_rng(admit_after * 7 + (capacity or 0))
    pool = rng.integers(-(2**63), 2**63 - 1, 40, dtype=np.int64)
    table, model = (SketchTable(admit_after, policy, capacity, ttl),
                    ContractModel(admit_after, policy, capacity, ttl))
    for _ in range(300):
        ids = pool[np.minimum(rng.zipf(1.3, int(rng.integers(1, 12))) - 1, pool.size - 1)]
        grads = rng.standard_normal((ids.size, DIM))
        assert table.push(ids, grads) == model.push(ids, grads)
        if rng.random() < 0.5:
            table.apply()
            model.apply()
            np.testing.assert_array_equal(table.lookup(pool), model.lookup(pool))
            assert len(table.index) == len(model.rows)
