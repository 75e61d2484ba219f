"""The contract of dynamic tables in dicts (rows by key, exact admission counts, brute-force
eviction) with SGD: the oracle DynamicTable is held to (test_table)."""

from __future__ import annotations

import numpy as np

from service.core.dynamic import initial_rows
from service.core.initializers import InitSpec

DIM, LR, SEED = 3, 0.5, 9
SPEC = InitSpec("normal", std=1.0)
DTYPE = np.dtype(np.float64)


def initial(keys: np.ndarray) -> np.ndarray:
    return initial_rows(keys, DIM, DTYPE, SPEC, SEED)


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
