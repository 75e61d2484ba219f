"""Eviction bookkeeping against a brute-force oracle: after each step, sort the live rows by
(policy value, key) and remove from the front (ttl first, by (last step, key))."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.core.dynamic.eviction import EvictionTracker
from service.core.dynamic.keyindex import KeyIndex

ROOT = Path(__file__).resolve().parents[3]


class BruteForce:
    """key -> [last step, count]; eviction by sorting everything, every time."""

    def __init__(self, policy: str, capacity: int | None, ttl_steps: int | None) -> None:
        self.rows: dict[int, list[int]] = {}
        self.policy, self.capacity, self.ttl_steps = policy, capacity, ttl_steps

    def touch(self, keys: list[int], step: int) -> None:
        for key in set(keys):
            row = self.rows.setdefault(key, [step, 0])
            row[0] = step
            row[1] += 1

    def evict(self, step: int) -> list[int]:
        gone: list[int] = []
        if self.ttl_steps is not None:
            old = [k for k, (last, _) in self.rows.items() if last <= step - self.ttl_steps]
            gone += sorted(old, key=lambda k: (self.rows[k][0], k))
            for key in old:
                del self.rows[key]
        if self.capacity is not None and len(self.rows) > self.capacity:
            column = 0 if self.policy == "lru" else 1
            ranked = sorted(self.rows, key=lambda k: (self.rows[k][column], k))
            victims = ranked[: len(self.rows) - self.capacity]
            gone += victims
            for key in victims:
                del self.rows[key]
        return gone


def run_against_oracle(policy: str, capacity: int | None, ttl_steps: int | None, steps: int,
                       seed: int, backend: str | None = None) -> None:
    """Random steps (small key pools, so counts and steps tie often; some steps touched twice;
    some rows removed by hand; a snapshot and restore in the middle), every eviction compared
    with the oracle's in order."""
    rng = np.random.default_rng(seed)
    pool = rng.integers(-(2**63), 2**63 - 1, 60, dtype=np.int64)
    index = KeyIndex(backend)
    tracker = EvictionTracker(index, policy, capacity, ttl_steps)  # type: ignore[arg-type]
    oracle = BruteForce(policy, capacity, ttl_steps)
    step = 0
    for number in range(steps):
        step += int(rng.integers(0, 3))  # sometimes the same step again (weights set)
        keys = pool[rng.integers(0, pool.size, int(rng.integers(0, 25)))]
        if rng.random() < 0.5:  # distinct and ascending, as a push has them: no sort needed
            keys = np.unique(keys)
        slots, _ = index.get_or_insert(keys)
        tracker.touch(slots, step)
        oracle.touch(keys.tolist(), step)
        if rng.random() < 0.05:  # a row deleted by other means
            key = int(pool[rng.integers(0, pool.size)])
            tracker.remove(index.delete(np.array([key])))
            oracle.rows.pop(key, None)
        gone = tracker.evict(step)
        assert index.slot_keys[gone].tolist() == oracle.evict(step)
        index.delete(index.slot_keys[gone])
        assert len(tracker) == len(index) == len(oracle.rows)
        if number == steps // 2:  # snapshot and restore: the orders come back from the values
            arrays = index.to_arrays()
            index = KeyIndex.from_arrays(**arrays, backend=backend)
            state = tracker.to_arrays()
            tracker = EvictionTracker.from_arrays(
                index, policy, capacity, ttl_steps,  # type: ignore[arg-type]
                state["slots"], state["last_step"], state["updates"],
                int(state["last_touched_step"]))
    keys, slots = index.items()
    assert keys.tolist() == sorted(oracle.rows)
    assert tracker.last_step(slots).tolist() == [oracle.rows[k][0] for k in keys.tolist()]
    assert tracker.updates(slots).tolist() == [oracle.rows[k][1] for k in keys.tolist()]


CONFIGS = [("lru", 20, None), ("lfu", 20, None), ("lru", None, 3), ("lfu", None, 3),
           ("lru", 15, 4), ("lfu", 15, 4), ("lfu", 1, None), ("lru", None, None)]


@pytest.mark.parametrize(("policy", "capacity", "ttl_steps"), CONFIGS)
@pytest.mark.parametrize("seed", [0, 1])
def test_evictions_match_brute_force(policy: str, capacity: int | None,
                                     ttl_steps: int | None, seed: int) -> None:
    run_against_oracle(policy, capacity, ttl_steps, 1500, seed)


def test_ties_go_to_the_smaller_key() -> None:
    index = KeyIndex()
    for policy in ("lru", "lfu"):
        index = KeyIndex()
        tracker = EvictionTracker(index, policy, capacity=2)  # type: ignore[arg-type]
        keys = np.array([30, -10, 20, 10])
        tracker.touch(index.get_or_insert(keys)[0], 5)  # same step, same count: all tie
        gone = tracker.evict(5)
        assert index.slot_keys[gone].tolist() == [-10, 10]


def test_lfu_keeps_the_often_updated_and_lru_the_recent() -> None:
    for policy, survivor in (("lru", 2), ("lfu", 1)):
        index = KeyIndex()
        tracker = EvictionTracker(index, policy, capacity=1)  # type: ignore[arg-type]
        for step in range(1, 4):
            tracker.touch(index.get_or_insert(np.array([1]))[0], step)
        tracker.touch(index.get_or_insert(np.array([2]))[0], 4)
        gone = tracker.evict(4)
        assert index.slot_keys[gone].tolist() == [3 - survivor]


def test_ttl_removes_rows_not_updated_in_the_last_ttl_steps() -> None:
    index = KeyIndex()
    tracker = EvictionTracker(index, "lru", ttl_steps=2)
    tracker.touch(index.get_or_insert(np.array([7]))[0], 1)
    tracker.touch(index.get_or_insert(np.array([8]))[0], 2)
    assert tracker.evict(2).size == 0  # row 7 was updated in step 1: within the last 2 steps
    assert index.slot_keys[tracker.evict(3)].tolist() == [7]


def test_refusals_change_nothing() -> None:
    index = KeyIndex()
    tracker = EvictionTracker(index, "lru")
    tracker.touch(index.get_or_insert(np.array([1, 2]))[0], 5)
    with pytest.raises(ValueError, match="step 4 is before the last touched step 5"):
        tracker.touch(np.array([0]), 4)
    with pytest.raises(ValueError, match="slot 9 is not a slot of the index"):
        tracker.touch(np.array([0, 9]), 6)
    assert tracker.last_step(np.array([0, 1])).tolist() == [5, 5]
    assert tracker.updates(np.array([0, 1])).tolist() == [1, 1]
    for bad, match in (({"policy": "fifo"}, "evict must be 'lru' or 'lfu', got 'fifo'"),
                       ({"capacity": 0}, "capacity must be >= 1 or null, got 0"),
                       ({"ttl_steps": 0}, "ttl_steps must be >= 1 or null, got 0")):
        with pytest.raises(ValueError, match=match):
            EvictionTracker(index, **bad)  # type: ignore[arg-type]


def test_nbytes_per_row_by_policy() -> None:
    for policy, ttl, per_slot in (("lru", None, 24), ("lfu", None, 24), ("lfu", 5, 32)):
        index = KeyIndex()
        tracker = EvictionTracker(index, policy, ttl_steps=ttl)  # type: ignore[arg-type]
        tracker.touch(index.get_or_insert(np.arange(1000))[0], 0)
        assert tracker.nbytes == per_slot * 1000  # grown from 0 to exactly 1000 slots


def test_the_same_code_runs_without_numba() -> None:
    """NUMBA_DISABLE_JIT=1 runs the kernels as plain Python: the mode without numba."""
    code = ("from tests.core.dynamic.test_eviction import run_against_oracle\n"
            "for p, c, t in [('lru', 8, 3), ('lfu', 8, 3)]:\n"
            "    run_against_oracle(p, c, t, 200, 5, backend='numpy')\n")
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=120)
