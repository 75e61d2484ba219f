"""The pending gradient: exact like a dense np.add.at buffer, sized like the rows pushed."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from service.core import EmbeddingTable, InitSpec, InvalidRequest, make_optimizer


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
