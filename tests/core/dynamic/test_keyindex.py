"""The key index against a Python dict with an explicit free stack (the obviously-right
oracle), on random operation sequences, for both backends."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.dynamic.backend import BACKENDS, NUMBA_AVAILABLE
from service.core.dynamic.keyindex import KeyIndex, as_keys, bucket_capacity_for

EXTREMES = np.array([-(2**63), 2**63 - 1, 0, -1, 1], dtype=np.int64)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "numba" and not NUMBA_AVAILABLE:
        pytest.fail("numba is a dependency and must be installed for this test")
    return str(request.param)


class DictIndex:
    """The oracle: a dict, a list used as the free stack, a slot counter."""

    def __init__(self) -> None:
        self.slots: dict[int, int] = {}
        self.free: list[int] = []
        self.slot_count = 0

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        return np.array([self.slots.get(k, -1) for k in keys.tolist()], dtype=np.int64)

    def get_or_insert(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out, created = [], []
        for key in keys.tolist():
            made = key not in self.slots
            if made:
                if self.free:
                    self.slots[key] = self.free.pop()
                else:
                    self.slots[key] = self.slot_count
                    self.slot_count += 1
            out.append(self.slots[key])
            created.append(made)
        return np.array(out, dtype=np.int64), np.array(created, dtype=bool)

    def delete(self, keys: np.ndarray) -> np.ndarray:
        out = []
        for key in keys.tolist():
            slot = self.slots.pop(key, -1)
            if slot >= 0:
                self.free.append(slot)
            out.append(slot)
        return np.array(out, dtype=np.int64)


def random_keys(rng: np.random.Generator, pool: np.ndarray, size: int) -> np.ndarray:
    """Mostly keys from a pool (repeats, deletes of present keys), some anywhere in int64."""
    picked = pool[rng.integers(0, pool.size, size)]
    anywhere = rng.integers(-(2**63), 2**63 - 1, size, dtype=np.int64, endpoint=True)
    return np.where(rng.random(size) < 0.8, picked, anywhere)


@pytest.mark.parametrize("seed", range(4))
def test_random_operations_match_a_dict(backend: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pool = np.concatenate([EXTREMES, rng.integers(-(2**63), 2**63 - 1, 3000, dtype=np.int64)])
    index, oracle = KeyIndex(backend), DictIndex()
    for _ in range(1500):
        keys = random_keys(rng, pool, int(rng.integers(0, 200)))
        operation = rng.choice(["lookup", "get_or_insert", "delete"], p=[0.3, 0.45, 0.25])
        if operation == "lookup":
            np.testing.assert_array_equal(index.lookup(keys), oracle.lookup(keys))
        elif operation == "get_or_insert":
            slots, created = index.get_or_insert(keys)
            want_slots, want_created = oracle.get_or_insert(keys)
            np.testing.assert_array_equal(slots, want_slots)
            np.testing.assert_array_equal(created, want_created)
        else:
            np.testing.assert_array_equal(index.delete(keys), oracle.delete(keys))
        assert len(index) == len(oracle.slots)
        assert index.slot_count == oracle.slot_count
    live = np.array(sorted(oracle.slots), dtype=np.int64)
    keys, slots = index.items()
    np.testing.assert_array_equal(keys, live)
    np.testing.assert_array_equal(slots, oracle.lookup(live))
    np.testing.assert_array_equal(index.free_slots, np.array(oracle.free, dtype=np.int64))
    # every key the oracle ever saw and dropped is absent, every live one found
    np.testing.assert_array_equal(index.lookup(pool), oracle.lookup(pool))


def test_dense_clusters_survive_deletion(backend: str) -> None:
    """Fill to the growth threshold, delete every other key, look everything up: backward
    shift (numba) and cluster re-placement (numpy) keep every remaining key reachable."""
    index = KeyIndex(backend)
    keys = np.arange(-5000, 5000, dtype=np.int64) * 7919
    index.get_or_insert(keys)
    assert len(index) / index.bucket_capacity <= 0.7
    gone = index.delete(keys[::2])
    assert (gone >= 0).all()
    np.testing.assert_array_equal(index.lookup(keys[::2]), np.full(5000, -1))
    np.testing.assert_array_equal(index.lookup(keys[1::2]), np.arange(1, 10000, 2))


def test_backends_agree_on_one_sequence() -> None:
    if not NUMBA_AVAILABLE:
        pytest.fail("numba is a dependency and must be installed for this test")
    rng = np.random.default_rng(7)
    pool = rng.integers(-(2**63), 2**63 - 1, 500, dtype=np.int64)
    a, b = KeyIndex("numba"), KeyIndex("numpy")
    for _ in range(300):
        keys = random_keys(rng, pool, 50)
        if rng.random() < 0.6:
            for x, y in zip(a.get_or_insert(keys), b.get_or_insert(keys), strict=True):
                np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_array_equal(a.delete(keys), b.delete(keys))
    for x, y in zip(a.items(), b.items(), strict=True):
        np.testing.assert_array_equal(x, y)
    assert a.nbytes == b.nbytes


def test_uint64_keys_are_the_int64_with_the_same_bits(backend: str) -> None:
    index = KeyIndex(backend)
    big = np.array([2**64 - 1, 2**63, 5], dtype=np.uint64)
    slots, _ = index.get_or_insert(big)
    np.testing.assert_array_equal(index.lookup(np.array([-1, -(2**63), 5])), slots)
    np.testing.assert_array_equal(as_keys(big), np.array([-1, -(2**63), 5]))
    np.testing.assert_array_equal(as_keys(np.array([3], dtype=np.int8)), [3])
    with pytest.raises(TypeError, match="dtype float64"):
        as_keys(np.array([1.0]))


def test_insert_refuses_present_or_repeated_keys_and_changes_nothing(backend: str) -> None:
    index = KeyIndex(backend)
    index.insert(np.array([1, 2, 3]))
    before = (index.to_arrays(), index.nbytes)
    with pytest.raises(ValueError, match="key 2 is already in the index"):
        index.insert(np.array([9, 2]))
    with pytest.raises(ValueError, match="key 9 appears more than once"):
        index.insert(np.array([9, 8, 9]))
    after = index.to_arrays()
    for name in after:
        np.testing.assert_array_equal(after[name], before[0][name])
    assert index.nbytes == before[1]
    assert index.lookup(np.array([8, 9])).tolist() == [-1, -1]


def test_round_trip_through_arrays_keeps_slots_and_free_list(backend: str) -> None:
    rng = np.random.default_rng(3)
    index = KeyIndex(backend)
    keys = rng.integers(-(2**63), 2**63 - 1, 5000, dtype=np.int64)
    index.get_or_insert(keys)
    index.delete(keys[rng.random(5000) < 0.3])
    arrays = index.to_arrays()
    other_backend = "numpy" if backend == "numba" or not NUMBA_AVAILABLE else "numba"
    restored = KeyIndex.from_arrays(**arrays, backend=other_backend)
    np.testing.assert_array_equal(restored.lookup(keys), index.lookup(keys))
    fresh = rng.integers(-(2**63), 2**63 - 1, 3000, dtype=np.int64)
    np.testing.assert_array_equal(restored.get_or_insert(fresh)[0], index.get_or_insert(fresh)[0])


def test_from_arrays_defaults_and_refusals(backend: str) -> None:
    index = KeyIndex.from_arrays(np.array([10, 20]), np.array([0, 3]), backend=backend)
    assert index.slot_count == 4
    np.testing.assert_array_equal(index.free_slots, [2, 1])  # slot 1 is reused first
    np.testing.assert_array_equal(index.get_or_insert(np.array([30, 40, 50]))[0], [1, 2, 4])
    with pytest.raises(ValueError, match="keys repeat"):
        KeyIndex.from_arrays(np.array([1, 1]), backend=backend)
    with pytest.raises(ValueError, match="slots repeat"):
        KeyIndex.from_arrays(np.array([1, 2]), np.array([0, 0]), backend=backend)
    with pytest.raises(ValueError, match="slot_count 1"):
        KeyIndex.from_arrays(np.array([1, 2]), slot_count=1, backend=backend)
    with pytest.raises(ValueError, match="free_slots"):
        KeyIndex.from_arrays(np.array([1]), np.array([0]), free_slots=np.array([0]),
                             backend=backend)


def test_bucket_growth_keeps_load_at_most_point_seven() -> None:
    for count in (0, 1, 11, 12, 100, 10**6):
        capacity = bucket_capacity_for(count)
        assert count <= 0.7 * capacity
        assert capacity == 16 or count > 0.7 * (capacity * 2 // 3)  # not a step too far


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="backend must be one of numba, numpy, got 'cuda'"):
        KeyIndex("cuda")


def test_package_exports() -> None:
    import service.core.dynamic as dynamic

    assert dynamic.__all__ == [
        "AdmissionCounter", "DynamicSpec", "DynamicTable", "EvictionTracker", "KeyIndex",
        "as_keys", "check_spec", "initial_rows", "warm_up"]
    assert all(hasattr(dynamic, name) for name in dynamic.__all__)


def test_the_dynamic_package_stays_in_the_core_layer() -> None:
    """Nothing here imports the web layer, the client or a web library (STYLE.md layers)."""
    import ast
    from pathlib import Path

    import service.core.dynamic as dynamic

    forbidden = ("service.api", "service.client", "fastapi", "starlette", "httpx")
    for path in Path(dynamic.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(forbidden), f"{path.name} imports {name}"


def test_warm_up_runs_every_kernel_with_both_backends() -> None:
    from service.core.dynamic import warm_up

    for name in BACKENDS:
        warm_up(name)  # a kernel that does not compile for a table's argument types raises
