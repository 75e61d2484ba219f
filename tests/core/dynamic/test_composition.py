"""The building blocks assembled as the dynamic table will assemble them (admission on push,
rows made on apply, SGD, eviction after the step), against a dict-of-rows model of the
issue's contract: proof that the pieces fit, and a sketch for the integration."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.dynamic import AdmissionCounter, EvictionTracker, KeyIndex, initial_rows
from service.core.initializers import InitSpec

DIM, LR, SEED = 3, 0.5, 9
SPEC = InitSpec("normal", std=1.0)
DTYPE = np.dtype(np.float64)


def initial(keys: np.ndarray) -> np.ndarray:
    return initial_rows(keys, DIM, DTYPE, SPEC, SEED)


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


class ContractModel:
    """The contract in dicts: rows by key, exact counts, brute-force eviction."""

    def __init__(self, admit_after: int, policy: str, capacity: int | None,
                 ttl: int | None) -> None:
        self.admit_after, self.policy, self.capacity, self.ttl = admit_after, policy, capacity, ttl
        self.rows: dict[int, np.ndarray] = {}
        self.meta: dict[int, list[int]] = {}  # key -> [last step, updates]
        self.seen: dict[int, int] = {}
        self.pending: dict[int, np.ndarray] = {}
        self.step = 0

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        return np.stack([self.rows[k] if k in self.rows else initial(np.array([k]))[0]
                         for k in keys.tolist()])

    def push(self, ids: np.ndarray, grads: np.ndarray) -> int:
        admitted = set()
        for key in set(ids.tolist()):
            if key in self.rows or key in self.pending:
                admitted.add(key)
                continue
            self.seen[key] = self.seen.get(key, 0) + 1
            if self.seen[key] >= self.admit_after:
                admitted.add(key)
                del self.seen[key]
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
        for key, total in self.pending.items():
            row = self.rows.get(key)
            self.rows[key] = (initial(np.array([key]))[0] if row is None else row) - LR * total
            last_count = self.meta.get(key, [0, 0])
            self.meta[key] = [self.step, last_count[1] + 1]
        self.pending.clear()
        if self.ttl is not None:
            for key in [k for k, (last, _) in self.meta.items() if last <= self.step - self.ttl]:
                del self.rows[key], self.meta[key]
        if self.capacity is not None and len(self.rows) > self.capacity:
            column = 0 if self.policy == "lru" else 1
            ranked = sorted(self.meta, key=lambda k: (self.meta[k][column], k))
            for key in ranked[: len(self.rows) - self.capacity]:
                del self.rows[key], self.meta[key]


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
