"""DynamicTable against its oracles: a fixed table imported from its initial rows (bit for bit,
every optimizer, float32 and float64, both kernel backends), and the contract model in dicts
(admission, capacity eviction with both policies and their ties, ttl)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.core.dynamic import DynamicSpec, DynamicTable
from service.core.errors import InvalidRequest
from service.core.initializers import InitSpec
from service.core.optimizers import make_optimizer
from service.core.table import EmbeddingTable
from tests.core.dynamic.model import DIM, LR, SEED, SPEC, ContractModel

pytestmark = pytest.mark.usefixtures("kernel_backend")  # every test on numba and on numpy

CONFIGS: dict[str, dict[str, Any]] = {
    "sgd": {"kind": "sgd", "lr": 0.1},
    "momentum": {"kind": "momentum", "lr": 0.05, "momentum": 0.8},
    "adagrad": {"kind": "adagrad", "lr": 0.3, "eps": 1e-3, "initial_accumulator_value": 0.2},
    "adam": {"kind": "adam", "lr": 0.05, "beta1": 0.8, "beta2": 0.95, "eps": 1e-6},
}


def dynamic_table(config: dict[str, Any], dtype: str = "float64", **settings: Any
                  ) -> DynamicTable:
    return DynamicTable("users", DIM, make_optimizer(config), dtype=dtype,
                        init=InitSpec("normal", std=1.0), seed=SEED,
                        settings=DynamicSpec(**settings))


def rows_by_key(table: DynamicTable, keys: np.ndarray) -> dict[str, np.ndarray]:
    """{"weights": (n, dim), state name: (n, dim)} of `keys`, which must all have rows."""
    contents = table.capture()
    rows = table.captured_rows(contents.slots)
    table.release()
    position = np.searchsorted(contents.keys, keys)  # (n,)
    assert (contents.keys[position] == keys).all()
    return {name: values[position] for name, values in rows.items()}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", CONFIGS)
def test_a_dynamic_table_trains_bit_for_bit_as_a_fixed_table_of_its_initial_rows(
    kind: str, dtype: str
) -> None:
    """admit_after 1, no capacity, no ttl: every push, apply=true push, apply (lr override,
    average) gives the fixed table's weights and optimizer state, bit for bit, when the fixed
    table's rows are the dynamic table's initial rows of the same keys."""
    rng = np.random.default_rng(sum(map(ord, kind + dtype)))
    pool = rng.integers(-(2**63), 2**63 - 1, 24, dtype=np.int64)  # key i is fixed row i
    table = dynamic_table(CONFIGS[kind], dtype)
    fixed = EmbeddingTable("fixed", len(pool), DIM, make_optimizer(CONFIGS[kind]), dtype=dtype,
                           weights=table.initial_rows(pool))
    for round_number in range(30):
        for _ in range(int(rng.integers(1, 4))):
            shape = [(9,), (3, 4)][int(rng.integers(0, 2))]
            rows = rng.choice(rng.integers(0, len(pool), 6), size=shape)  # duplicates
            grads = rng.standard_normal((*shape, DIM)).astype(dtype)
            apply = bool(rng.random() < 0.25)
            keys = pool[rows]
            if rng.random() < 0.3:  # the same keys as uint64: the same bits
                keys = keys.view(np.uint64)
            got, expected = table.push(keys, grads, apply=apply), fixed.push(rows, grads,
                                                                          apply=apply)
            assert (got.pending_rows, got.step, got.rows_updated, got.dropped_rows) == (
                expected.pending_rows, expected.step, expected.rows_updated, 0)
        options = [{}, {"lr": 0.02}, {"average": True}][round_number % 3]
        assert table.apply(**options) == fixed.apply(**options)
        lookup, step = table.lookup(pool)
        np.testing.assert_array_equal(lookup, fixed.weights)
        assert step == fixed.step
        live = np.isin(pool, table.export_rows()[0])
        state = rows_by_key(table, np.sort(pool[live]))
        order = np.argsort(pool[live])
        np.testing.assert_array_equal(state["weights"], fixed.weights[live][order])
        for name in fixed.state:
            np.testing.assert_array_equal(state[name], fixed.state[name][live][order], name)


@pytest.mark.parametrize(("admit_after", "policy", "capacity", "ttl"), [
    (1, "lru", None, None), (2, "lru", 12, None), (3, "lfu", 10, 5), (1, "lfu", 6, None),
    (2, "lru", None, 3), (4, "lfu", 4, 2),
])
def test_admission_and_eviction_follow_the_contract(
    admit_after: int, policy: str, capacity: int | None, ttl: int | None
) -> None:
    """Random pushes of Zipf keys with duplicates: the same dropped counts, rows, evictions
    (ties by the smaller key) and lookups as the contract model in dicts."""
    rng = np.random.default_rng(admit_after * 7 + (capacity or 0))
    pool = rng.integers(-(2**63), 2**63 - 1, 40, dtype=np.int64)
    table = DynamicTable("users", DIM, make_optimizer({"kind": "sgd", "lr": LR}),
                         dtype="float64", init=SPEC, seed=SEED,
                         settings=DynamicSpec(capacity, admit_after, policy, ttl))  # type: ignore[arg-type]
    model = ContractModel(admit_after, policy, capacity, ttl)
    evicted = 0
    for _ in range(300):
        ids = pool[np.minimum(rng.zipf(1.3, int(rng.integers(1, 12))) - 1, pool.size - 1)]
        grads = rng.standard_normal((ids.size, DIM))
        assert table.push(ids, grads).dropped_rows == model.push(ids, grads)
        if rng.random() < 0.5:
            made_or_kept = set(model.rows) | set(model.pending)
            table.apply()
            model.apply()
            evicted += len(made_or_kept - set(model.rows))
            np.testing.assert_array_equal(table.lookup(pool)[0], model.lookup(pool))
            assert table.live_rows == len(model.rows)
            np.testing.assert_array_equal(table.export_rows()[0], sorted(model.rows))
    assert table.evicted_rows == evicted
    assert table.info()["evicted_rows"] == evicted and table.info()["rows"] == len(model.rows)


@pytest.mark.parametrize("policy", ["lru", "lfu"])
def test_ties_leave_by_the_smaller_key(policy: str) -> None:
    table = dynamic_table({"kind": "sgd", "lr": 1.0}, capacity=2, evict=policy)
    keys = np.array([30, -7, 12])
    table.push(keys, np.ones((3, DIM)), apply=True)  # same step, same count: ties
    assert table.export_rows()[0].tolist() == [12, 30]
    table.push(np.array([12]), np.ones((1, DIM)), apply=True)  # 12: newer and more often
    table.push(np.array([-50]), np.ones((1, DIM)), apply=True)
    # lru: 30 (step 1) leaves; lfu: -50 and 30 have one update each, the smaller key leaves
    assert table.export_rows()[0].tolist() == ([-50, 12] if policy == "lru" else [12, 30])
    assert table.evicted_rows == 2


def test_rows_not_updated_within_ttl_steps_leave_and_come_back_as_new() -> None:
    table = dynamic_table({"kind": "sgd", "lr": 1.0}, ttl_steps=2)
    initial = table.initial_rows(np.array([1]))
    table.push(np.array([1, 2]), np.ones((2, DIM)), apply=True)  # step 1
    table.push(np.array([2]), np.ones((1, DIM)), apply=True)  # step 2
    assert table.export_rows()[0].tolist() == [1, 2]
    table.push(np.array([2]), np.ones((1, DIM)), apply=True)  # step 3: 1 last updated at 1
    assert table.export_rows()[0].tolist() == [2]
    np.testing.assert_array_equal(table.lookup(np.array([1]))[0], initial)  # gone: initial
    assert table.evicted_rows == 1


def test_admission_drops_until_the_admit_after_th_push_counting_repeats_once() -> None:
    table = dynamic_table({"kind": "sgd", "lr": 1.0}, admit_after=3)
    ids, grads = np.array([5, 5, 9]), np.ones((3, DIM))
    assert table.push(ids, grads).dropped_rows == 3  # 5 counted once in this push
    assert table.push(ids, grads).dropped_rows == 3
    result = table.push(ids, grads)  # the third push: admitted, its gradient kept
    assert (result.dropped_rows, result.pending_rows) == (0, 2)
    assert table.push(np.array([5, 77]), np.ones((2, DIM))).dropped_rows == 1  # 5 is pending
    table.apply()
    np.testing.assert_array_equal(table.lookup(np.array([5]))[0],
                                  table.initial_rows(np.array([5])) - 3)


def test_a_refused_step_takes_back_the_rows_it_made() -> None:
    table = dynamic_table({"kind": "sgd", "lr": 1e300}, dtype="float64")
    table.push(np.array([1]), np.ones((1, DIM)), apply=True)
    before = table.export_rows()
    with pytest.raises(InvalidRequest, match="would not be finite"):
        table.push(np.array([1, 2, 3]), np.full((3, DIM), 1e300), apply=True)
    after = table.export_rows()
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    assert (table.live_rows, table.step) == (1, 1)


def test_labels_are_about_ids_and_outlive_eviction() -> None:
    table = dynamic_table({"kind": "sgd", "lr": 1.0}, capacity=1)
    table.labels.set(np.array([3, -(2**63)]), ["three", "lowest"], merge=False,
                     check_ids=table.check_ids)  # keys without rows may carry labels
    table.push(np.array([3]), np.ones((1, DIM)), apply=True)
    table.push(np.array([4]), np.ones((1, DIM)), apply=True)  # 3 is evicted
    assert table.export_rows()[0].tolist() == [4]
    assert table.labels.labels_of([3, -(2**63), 4]) == ["three", "lowest", None]
    view = table.row_view()
    assert view.live_rows() == 1
    blocks = list(view.blocks(8, np.empty((8, DIM))))
    assert [ids.tolist() for ids, _ in blocks] == [[4]]
    np.testing.assert_array_equal(blocks[0][1], table.lookup(np.array([4]))[0])
    with pytest.raises(InvalidRequest, match="id 3 has no row in table 'users'"):
        view.rows_of(np.array([4, 3]))


def test_a_capture_reads_the_rows_of_its_instant_while_training_goes_on() -> None:
    """Copy on write: rows updated, evicted, and their slots reused by new keys after the
    capture are read as they were at the capture."""
    table = dynamic_table(CONFIGS["adam"], capacity=6)
    rng = np.random.default_rng(3)
    for _ in range(5):
        table.push(rng.integers(0, 20, 8), rng.standard_normal((8, DIM)), apply=True)
    contents = table.capture()
    keys, weights, _ = table.export_rows()  # the same instant: nothing ran in between
    np.testing.assert_array_equal(keys, contents.keys)
    for _ in range(5):  # updates, evictions, new keys in freed slots
        table.push(rng.integers(10, 40, 8), rng.standard_normal((8, DIM)), apply=True)
    first = table.captured_rows(contents.slots[:3])
    table.push(rng.integers(0, 40, 8), rng.standard_normal((8, DIM)), apply=True)
    rest = table.captured_rows(contents.slots[3:])
    table.release()
    np.testing.assert_array_equal(np.concatenate([first["weights"], rest["weights"]]), weights)
    assert table.evicted_rows > 0
