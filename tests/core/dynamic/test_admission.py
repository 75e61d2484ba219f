"""Admission counting against an oracle that keeps every count and forgets by brute force."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.dynamic.admission import AdmissionCounter


class Oracle:
    """key -> [count, last push]; over the cap, sort all by (last push, key), drop the front."""

    def __init__(self, admit_after: int, cap: int) -> None:
        self.admit_after, self.cap, self.pushes = admit_after, cap, 0
        self.rows: dict[int, list[int]] = {}

    def record(self, keys: list[int]) -> list[bool]:
        self.pushes += 1
        admitted = set()
        for key in set(keys):
            row = self.rows.setdefault(key, [0, 0])
            row[0] += 1
            row[1] = self.pushes
            if row[0] >= self.admit_after:
                admitted.add(key)
                del self.rows[key]
        if len(self.rows) > self.cap:
            ranked = sorted(self.rows, key=lambda k: (self.rows[k][1], k))
            for key in ranked[: len(self.rows) - self.cap]:
                del self.rows[key]
        return [key in admitted for key in keys]


@pytest.mark.parametrize(("admit_after", "cap"), [(1, 5), (2, 10), (3, 40), (5, 7)])
def test_admissions_match_the_oracle(admit_after: int, cap: int) -> None:
    rng = np.random.default_rng(admit_after * 100 + cap)
    pool = rng.integers(-(2**63), 2**63 - 1, 80, dtype=np.int64)
    counter, oracle = AdmissionCounter(admit_after, cap), Oracle(admit_after, cap)
    for number in range(1500):
        keys = pool[rng.integers(0, pool.size, int(rng.integers(0, 12)))]  # repeats too
        expected = oracle.record(keys.tolist())
        assert counter.would_admit(np.unique(keys)).tolist() == [
            k in {x for x, e in zip(keys.tolist(), expected, strict=True) if e}
            for k in np.unique(keys).tolist()]
        assert counter.record(keys).tolist() == expected
        if admit_after > 1:
            assert len(counter) == len(oracle.rows) <= cap
        if number == 700:  # snapshot and restore
            counter = AdmissionCounter.from_arrays(admit_after, cap, **counter.to_arrays())
    state = counter.to_arrays()
    assert state["keys"].tolist() == sorted(oracle.rows)
    assert state["counts"].tolist() == [oracle.rows[k][0] for k in sorted(oracle.rows)]


def test_a_push_counts_a_key_once_and_admits_at_the_nth_push() -> None:
    counter = AdmissionCounter(admit_after=3)
    assert counter.record(np.array([4, 4, 4])).tolist() == [False] * 3
    assert counter.counts(np.array([4, 5])).tolist() == [1, 0]
    assert counter.record(np.array([4])).tolist() == [False]
    assert counter.would_admit(np.array([4, 5])).tolist() == [True, False]
    assert counter.counts(np.array([4])).tolist() == [2]  # would_admit changed nothing
    assert counter.record(np.array([5, 4])).tolist() == [False, True]
    assert len(counter) == 1  # 4 is admitted and no longer counted; 5 is


def test_a_long_tail_of_one_off_keys_stays_within_the_cap() -> None:
    counter = AdmissionCounter(admit_after=2, max_candidates=1000)
    hot = np.array([-1, -2])
    for push in range(200):
        one_offs = np.arange(push * 500, push * 500 + 500)  # 100,000 distinct one-off keys
        admitted = counter.record(np.concatenate([one_offs, hot if push < 2 else hot[:0]]))
        assert len(counter) <= 1000
        if push == 1:
            assert admitted[-2:].tolist() == [True, True]  # seen in 2 consecutive pushes
    assert counter.forgotten == 100_000 + 2 - 2 - 1000
    assert counter.nbytes < 200 * 1000  # bounded by the cap, not by the 100,000 keys seen


def test_forgetting_makes_a_key_late_never_early() -> None:
    """Appearances separated by >= max_candidates other new keys: the count restarts."""
    counter = AdmissionCounter(admit_after=2, max_candidates=3)
    counter.record(np.array([7]))
    counter.record(np.array([1, 2, 3]))  # 3 newer candidates: 7 is the stalest, forgotten
    assert counter.record(np.array([7])).tolist() == [False]
    assert counter.record(np.array([7])).tolist() == [True]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="admit_after must be >= 1, got 0"):
        AdmissionCounter(admit_after=0)
    with pytest.raises(ValueError, match="max_candidates must be >= 1, got 0"):
        AdmissionCounter(max_candidates=0)
