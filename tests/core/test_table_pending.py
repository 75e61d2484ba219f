"""The pending gradient: exact like a dense np.add.at buffer, sized like the rows pushed."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from service.core import EmbeddingTable, InitSpec, InvalidRequest, kernels, make_optimizer
from service.core.budget import MemoryBudget
from service.core.errors import BudgetExceeded
from service.core.pending import PendingGradient

pytestmark = pytest.mark.usefixtures("kernel_backend")  # every test on numba and on numpy


def make_table(num_embeddings: int, dim: int, dtype: str = "float32", kind: str = "sgd"
               ) -> EmbeddingTable:
    return EmbeddingTable("t", num_embeddings, dim, make_optimizer({"kind": kind}), dtype=dtype,
                          init=InitSpec(kind="zeros"))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pending_sums_are_bit_identical_to_one_dense_np_add_at_buffer(dtype: str) -> None:
    """Many pushes with duplicates within and across them, magnitudes far apart so that the
    order of additions shows in the bits."""
    rng = np.random.default_rng(0)
    table = make_table(30, 8, dtype)
    dense = np.zeros((30, 8), dtype=dtype)
    pushed: set[int] = set()
    for push in range(12):
        ids = rng.integers(0, 30 if push % 2 else 6, size=int(rng.integers(1, 50)))
        grads = (rng.standard_normal((len(ids), 8)) * 10.0 ** rng.integers(-8, 8, (len(ids), 1)))
        grads = grads.astype(dtype)
        table.push(ids, grads)
        np.add.at(dense, ids, grads)
        pushed.update(ids.tolist())
        rows, sums, pushes = table.pending()
        assert pushes == push + 1
        assert sorted(rows.tolist()) == sorted(pushed)
        np.testing.assert_array_equal(sums.view(np.uint8), dense[rows].view(np.uint8))
    assert table.apply().rows_updated == len(rows)


def test_restore_pending_puts_back_what_pending_read() -> None:
    table = make_table(50, 3, "float64")
    table.push(np.array([7, 3, 7, 40]), np.arange(12.0).reshape(4, 3))
    table.push(np.array([3, 9]), np.ones((2, 3)))
    rows, sums, pushes = table.pending()
    other = make_table(50, 3, "float64")
    other.restore_pending(rows, sums, pushes)
    again = other.pending()
    order = np.argsort(rows)
    np.testing.assert_array_equal(np.sort(again[0]), rows[order])
    np.testing.assert_array_equal(again[1][np.argsort(again[0])], sums[order])
    assert again[2] == pushes == 2
    assert other.pending_rows == table.pending_rows == 4


def test_push_and_apply_allocate_nothing_the_size_of_the_table() -> None:
    """On a 2-million-row table, a push of 1000 rows and its apply allocate well under one
    row-per-table-row array (a per-row map of int32 would be 8 MB; a dense gradient 128 MB)."""
    table = make_table(2_000_000, 16, kind="adam")
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 2_000_000, size=1000)
    grads = rng.standard_normal((1000, 16)).astype(np.float32)
    tracemalloc.start()
    try:
        table.push(ids, grads)
        table.push(ids[::-1], grads)
        table.apply()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000  # bytes: what 1000 pushed rows need, not 2 million table rows


def test_pending_bytes_follow_distinct_pushed_rows() -> None:
    table = make_table(1_000_000, 4)
    assert table.pending_nbytes == 0
    assert table.nbytes == 1_000_000 * 4 * 4
    for _ in range(5):  # the same 100 rows again and again: no growth after the first push
        table.push(np.arange(100) * 997, np.ones((100, 4), np.float32))
        assert table.pending_rows == 100
        assert 100 * (4 * 4 + 8 + 16) <= table.pending_nbytes <= 2 * 100 * (4 * 4 + 8 + 16)
    table.apply()
    assert table.pending_rows == 0
    table.push(np.arange(10), np.ones((10, 4), np.float32))  # capacity is reused
    assert table.pending_rows == 10 and table.pending_nbytes < 2 * 100 * (4 * 4 + 8 + 16)


@pytest.mark.parametrize("apply", [False, True])
def test_a_push_whose_sums_overflow_is_refused_and_changes_nothing(apply: bool) -> None:
    table = EmbeddingTable(
        "t", 4, 2, make_optimizer({"kind": "sgd", "lr": 1.0}), dtype="float64",
        init=InitSpec(kind="zeros"),
    )
    table.push(np.array([1]), np.array([[1e308, 1.0]]))
    rows, sums, pushes = table.pending()
    with pytest.raises(InvalidRequest, match="grads overflow: the summed gradient of row 1"):
        # within one push (apply or not), and across pushes for the pending path
        table.push(np.array([2, 1, 1]), np.array([[1.0, 1.0], [1e308, 0.0], [1e308, 0.0]]),
                   apply=apply)
    after_rows, after_sums, after_pushes = table.pending()
    np.testing.assert_array_equal(after_rows, rows)
    np.testing.assert_array_equal(after_sums, sums)
    assert (after_pushes, table.step) == (pushes, 0)
    np.testing.assert_array_equal(table.weights, np.zeros((4, 2)))


def test_pending_gradient_takes_any_int64_key_and_counts_its_pushes() -> None:
    """The accumulator alone (no table): keys anywhere in int64, negatives and the extremes
    included (what dynamic tables push), summed exactly as a dict of np.add.at rows."""
    rng = np.random.default_rng(3)
    extremes = [np.iinfo(np.int64).min, -1, 0, np.iinfo(np.int64).max]
    pool = np.concatenate([extremes, rng.integers(-2**62, 2**62, 20)])
    pending = PendingGradient("t", 4, np.dtype(np.float64))
    oracle: dict[int, np.ndarray] = {}
    for push in range(30):
        ids = rng.choice(pool, size=int(rng.integers(0, 40)))
        grads = rng.standard_normal((len(ids), 4)) * 10.0 ** rng.integers(-8, 8, (len(ids), 1))
        rows, slot_of_id = kernels.sorted_distinct(ids)
        pending.add(rows, slot_of_id, grads)
        for key, grad in zip(ids.tolist(), grads, strict=True):
            oracle[key] = oracle.get(key, np.zeros(4)) + grad
        assert pending.pushes == push + 1
        assert sorted(pending.rows.tolist()) == sorted(oracle)
        expected = np.array([oracle[key] for key in pending.rows.tolist()]).reshape(-1, 4)
        np.testing.assert_array_equal(pending.sums.view(np.uint8), expected.view(np.uint8))
    pending.clear()
    assert (pending.count, pending.pushes) == (0, 0)


def test_pending_gradient_asks_the_budget_it_was_given_before_growing() -> None:
    asked: list[tuple[str, int]] = []

    class Recording(MemoryBudget):
        def check_growth(self, table: str, extra: int) -> None:
            asked.append((table, extra))
            super().check_growth(table, extra)

    pending = PendingGradient("words", 2, np.dtype(np.float32), Recording(10_000, lambda: 0))
    pending.add(*kernels.sorted_distinct(np.arange(3)), np.ones((3, 2), np.float32))
    # room for 64 rows of id + sum, and the sorted index's entries (id, slot) of the 3 new rows
    assert asked == [("words", 64 * (8 + 2 * 4) + 3 * 16)]
    with pytest.raises(BudgetExceeded, match="push to table 'words' refused"):
        pending.add(*kernels.sorted_distinct(np.arange(1000)), np.ones((1000, 2), np.float32))
    assert pending.count == 3 and pending.pushes == 1  # the refused push changed nothing


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["sgd", "momentum", "adagrad", "adam"])
@pytest.mark.parametrize("mode", ["apply", "async push"])
def test_an_update_that_would_not_be_finite_is_refused_whole(
    kind: str, dtype: str, mode: str
) -> None:
    """lr 1e10 over a pending 1e30 (float32), or 1e300 (float64): the step would leave inf in the
    weights (or the state): refused naming table, row and array; weights, state, step and the
    pending gradient unchanged."""
    big = 1e30 if dtype == "float32" else 1e300
    table = EmbeddingTable("words", 6, 3, make_optimizer({"kind": kind, "lr": 1e10}),
                           dtype=dtype, init=InitSpec(kind="normal"), seed=1)
    table.push(np.array([2, 4]), np.full((2, 3), 1e-3))
    table.apply()  # a step that is fine: state is not all zeros any more
    ids, grads = np.array([1, 5, 5]), np.array([[1.0, 1.0, 1.0], [big, 0, 0], [big, 0, 0]])
    if mode == "apply":
        table.push(ids, grads)
    before = (table.weights.copy(), {k: v.copy() for k, v in table.state.items()},
              table.step, table.pending())
    with pytest.raises(InvalidRequest) as refused:
        if mode == "apply":
            table.apply()
        else:
            table.push(ids, grads, apply=True)
    # sgd, momentum: lr * g is inf (weights named before velocity); adagrad, adam: g * g is inf
    # (their weights stay finite)
    first = {"sgd": "weights", "momentum": "weights", "adagrad": "sum_squares",
             "adam": "exp_avg_sq"}[kind]
    assert refused.value.detail == (
        f"update of table 'words' refused: the new {first} of row 5 would not be finite "
        f"in {dtype} (lr=10000000000.0, optimizer {kind}); nothing was changed")
    np.testing.assert_array_equal(table.weights, before[0])
    for name, values in table.state.items():
        np.testing.assert_array_equal(values, before[1][name])
    after = table.pending()
    assert table.step == before[2] and after[2] == before[3][2]
    np.testing.assert_array_equal(after[0], before[3][0])
    np.testing.assert_array_equal(after[1], before[3][1])


@pytest.mark.parametrize("apply", [False, True])
def test_unaligned_and_byte_swapped_arrays_push_like_native_ones(apply: bool) -> None:
    """A body's .npy can hold ids and grads at any offset (an odd header) or in big-endian byte
    order; the kernels take them after a copy, with the same sums as native arrays."""
    rng = np.random.default_rng(4)
    ids = rng.integers(0, 20, 30)
    grads = rng.standard_normal((30, 3)).astype(np.float32)
    odd = np.frombuffer(b"x" + ids.tobytes(), dtype=np.int64, offset=1)  # unaligned
    swapped = grads.astype(">f4")
    assert not odd.flags.aligned
    native, other = make_table(20, 3), make_table(20, 3)
    native.push(ids, grads, apply=apply)
    other.push(odd, swapped, apply=apply)
    np.testing.assert_array_equal(other.weights, native.weights)
    for got, expected in zip(other.pending(), native.pending(), strict=True):
        np.testing.assert_array_equal(got, expected)
