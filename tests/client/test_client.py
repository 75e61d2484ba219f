"""Every method of the client, the same tests for the sync and the async client, each against
the ASGI app and a real uvicorn process (see conftest.py). Values are checked exactly against
numpy on small tables with exactly representable numbers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.client import ApplyResult, Lookup, PushResult, TableInfo
from tests.client.conftest import ClientFactory


def test_health(client: Any) -> None:
    assert client.health() == {"status": "ok"}


def test_create_get_list_delete(client: Any, table_name: str) -> None:
    created = client.create_table(
        table_name, 10, 4, dtype="float64", init={"kind": "uniform", "low": -1, "high": 1},
        seed=7, optimizer={"kind": "adam", "lr": 0.01}, max_staleness=3,
    )
    assert isinstance(created, TableInfo)
    assert (created.name, created.shape, created.dtype, created.seed) == (
        table_name, (10, 4), "float64", 7)
    assert created.optimizer["kind"] == "adam" and created.optimizer["lr"] == 0.01
    assert created.init == {"kind": "uniform", "low": -1.0, "high": 1.0}
    assert (created.max_staleness, created.step, created.pending_rows) == (3, 0, 0)
    assert created.raw["name"] == table_name

    assert client.get_table(table_name) == created
    assert table_name in {table.name for table in client.list_tables()}

    assert client.delete_table(table_name) is None
    assert table_name not in {table.name for table in client.list_tables()}


def test_kind_strings_for_optimizer_and_init(client: Any, table_name: str) -> None:
    info = client.create_table(table_name, 5, 3, init="zeros", optimizer="adagrad")
    assert info.init == {"kind": "zeros"} and info.optimizer["kind"] == "adagrad"
    assert np.array_equal(client.lookup(table_name, [0, 4]), np.zeros((2, 3), np.float32))


def test_lookup_matches_the_table(client: Any, table_name: str) -> None:
    client.create_table(table_name, 20, 8, seed=3)
    weights = np.asarray(client.export_weights(table_name))  # (20, 8) float32
    ids = np.array([[3, 3, 19], [0, 7, 3]])  # duplicates and an n-d shape
    vectors = client.lookup(table_name, ids)
    assert vectors.shape == (2, 3, 8) and vectors.dtype == np.float32
    assert np.array_equal(vectors, weights[ids])
    assert np.array_equal(client.lookup(table_name, [5]), weights[[5]])
    assert client.lookup(table_name, []).shape == (0, 8)
    assert client.lookup(table_name, np.int32(4)).shape == (8,)


def test_lookup_with_step(client: Any, table_name: str) -> None:
    client.create_table(table_name, 4, 2, init="zeros", optimizer={"kind": "sgd", "lr": 1.0})
    first = client.lookup_with_step(table_name, [1])
    assert isinstance(first, Lookup) and first.step == 0
    client.push_gradients(table_name, [1], [[1.0, 2.0]], apply=True)
    vectors, step = client.lookup_with_step(table_name, [1])
    assert step == 1
    assert np.array_equal(vectors, np.array([[-1.0, -2.0]], np.float32))


def test_push_then_apply_is_the_sgd_step(client: Any, table_name: str) -> None:
    client.create_table(table_name, 6, 3, init="zeros", optimizer={"kind": "sgd", "lr": 0.5})
    ids = np.array([2, 5, 2])
    grads = np.arange(9, dtype=np.float32).reshape(3, 3)  # (3, 3)
    pushed = client.push_gradients(table_name, ids, grads)
    assert pushed == PushResult(rows=3, pending_rows=2, step=0, rows_updated=0)
    assert client.get_table(table_name).pending_rows == 2

    applied = client.apply(table_name)
    assert applied == ApplyResult(step=1, rows_updated=2)
    expected = np.zeros((6, 3), np.float32)
    np.add.at(expected, ids, -0.5 * grads)
    assert np.array_equal(client.export_weights(table_name), expected)
    assert client.apply(table_name) == ApplyResult(step=1, rows_updated=0)  # nothing pending


def test_apply_lr_and_average(client: Any, table_name: str) -> None:
    client.create_table(table_name, 3, 2, init="zeros", optimizer={"kind": "sgd", "lr": 1.0})
    client.push_gradients(table_name, [0], [[2.0, 4.0]])
    client.push_gradients(table_name, [0], [[6.0, 8.0]])
    assert client.apply(table_name, lr=0.5, average=True) == ApplyResult(1, 1)
    # average of the two pushes, (4, 6), times lr 0.5
    assert np.array_equal(client.lookup(table_name, [0]), np.array([[-2.0, -3.0]], np.float32))


def test_asynchronous_push_with_step(client: Any, table_name: str) -> None:
    client.create_table(table_name, 4, 2, init="zeros", optimizer={"kind": "sgd", "lr": 1.0},
                        max_staleness=1)
    result = client.push_gradients(table_name, [3, 3], [[1.0, 0.0], [1.0, 0.0]], apply=True,
                                   step=0)
    assert result == PushResult(rows=2, pending_rows=0, step=1, rows_updated=1)
    assert np.array_equal(client.lookup(table_name, [3]), np.array([[-2.0, 0.0]], np.float32))


def test_every_push_counts_once_each(client: Any, table_name: str) -> None:
    """Two identical calls are two pushes: each call has its own Idempotency-Key."""
    client.create_table(table_name, 2, 2, init="zeros", optimizer={"kind": "sgd", "lr": 1.0})
    for _ in range(2):
        assert client.push_gradients(table_name, [1], [[1.0, 1.0]]).replayed is False
    client.apply(table_name)
    assert np.array_equal(client.lookup(table_name, [1]), np.array([[-2.0, -2.0]], np.float32))


def test_export_and_import_weights(client: Any, table_name: str) -> None:
    client.create_table(table_name, 5, 3, dtype="float64", optimizer="sgd")
    client.push_gradients(table_name, [0], [[1.0, 1.0, 1.0]])  # pending, dropped by the import
    new = np.arange(15, dtype=np.float64).reshape(5, 3) / 4
    info = client.import_weights(table_name, new)
    assert isinstance(info, TableInfo) and info.pending_rows == 0 and info.shape == (5, 3)
    exported = client.export_weights(table_name)
    assert exported.dtype == np.float64 and np.array_equal(exported, new)
    assert np.array_equal(client.lookup(table_name, [4, 1]), new[[4, 1]])


def test_snapshot(client: Any, table_name: str) -> None:
    client.create_table(table_name, 3, 2)
    reply = client.snapshot()
    assert table_name in {table["name"] for table in reply["tables"]} | set(reply["unchanged"])
    assert set(reply) >= {"tables", "unchanged", "bytes", "seconds"}


@pytest.mark.parametrize("wire", ["binary", "json"])
def test_wire_formats_agree(make_client: ClientFactory, table_name: str, wire: str) -> None:
    """The JSON wire gives the same numbers (as float64: JSON carries no dtype)."""
    reference = make_client()
    client = make_client(wire=wire)
    client.create_table(table_name, 8, 4, seed=1, optimizer={"kind": "sgd", "lr": 0.25})
    ids = np.array([[1, 2], [2, 7]])
    before = reference.lookup(table_name, ids)  # binary, float32
    vectors, step = client.lookup_with_step(table_name, ids)
    assert step == 0 and vectors.shape == (2, 2, 4)
    assert vectors.dtype == (np.float32 if wire == "binary" else np.float64)
    assert np.array_equal(vectors.astype(np.float32), before)

    grads = np.full((2, 2, 4), 2.0, dtype=np.float32)
    assert client.push_gradients(table_name, ids, grads, step=0) == PushResult(4, 3, 0)
    assert client.apply(table_name) == ApplyResult(1, 3)
    expected = reference.export_weights(table_name).copy()
    assert np.array_equal(reference.lookup(table_name, [7]), expected[[7]])
    assert np.array_equal(client.lookup(table_name, [7]).astype(np.float32),
                          before[1, 1][None] - np.float32(0.5))


@pytest.mark.parametrize("rows", [2, 2048], ids=["short-reply", "long-reply"])
def test_lookup_reply_is_a_read_only_view(client: Any, table_name: str, rows: int) -> None:
    """A short reply's array views its bytes; a long one's (512 KiB here) the buffer the
    transport received it into: read-only either way, and the table's rows exactly."""
    client.create_table(table_name, 3000, 64, seed=3)
    ids = np.arange(rows)[::-1] * 7 % 3000  # (rows,)
    vectors = client.lookup(table_name, ids)
    assert not vectors.flags.writeable
    assert np.array_equal(vectors, client.export_weights(table_name)[ids])
    writable = vectors.copy()
    writable += 1
    assert np.array_equal(writable, vectors + 1)
