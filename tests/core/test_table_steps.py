"""Steps numbered by someone else (what a cluster-mode shard does, service.cluster): seal the
pending gradient, check the step, take it. Each is checked against the table's own apply() on
a twin table: same weights, optimizer state and step, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from service.core import InvalidRequest, make_optimizer
from service.core.table import EmbeddingTable
from tests.same_table import assert_same_table

OPTIMIZERS = [{"kind": "sgd", "lr": 0.5}, {"kind": "momentum", "lr": 0.1},
              {"kind": "adagrad", "lr": 0.3}, {"kind": "adam", "lr": 0.01}]


def twins(optimizer: dict[str, object]) -> tuple[EmbeddingTable, EmbeddingTable]:
    return tuple(EmbeddingTable("t", 20, 4, make_optimizer(optimizer), seed=5)  # type: ignore
                 for _ in range(2))


def push_same(tables: tuple[EmbeddingTable, ...], rng: np.random.Generator) -> None:
    ids = rng.integers(0, 20, 15)
    grads = rng.standard_normal((15, 4)).astype(np.float32)
    for table in tables:
        table.push(ids, grads)


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=lambda o: str(o["kind"]))
def test_seal_check_take_is_apply(optimizer: dict[str, object]) -> None:
    rng = np.random.default_rng(0)
    ours, reference = twins(optimizer)
    for _ in range(6):
        push_same((ours, reference), rng)
        push_same((ours, reference), rng)
        sealed = ours.seal_pending()
        assert ours.pending_rows == 0 and sealed.pushes == 2
        ours.check_step(sealed.rows, sealed.sums, ours.optimizer.lr, ours.step + 1)
        ours.take_step(sealed.rows, sealed.sums, ours.optimizer.lr, ours.step + 1)
        reference.apply()
        assert_same_table(ours, reference)


def test_a_step_with_no_rows_moves_only_the_step() -> None:
    table, reference = twins({"kind": "adam"})
    table.take_step(np.empty(0, np.int64), np.empty((0, 4), np.float32), 0.1, 7)
    assert table.step == 7
    np.testing.assert_array_equal(table.weights, reference.weights)


def test_unseal_puts_the_gradient_back_in_front_of_later_pushes() -> None:
    rng = np.random.default_rng(1)
    table, reference = twins({"kind": "sgd"})
    push_same((table, reference), rng)
    sealed = table.seal_pending()
    table.unseal(sealed)
    assert_same_table(table, reference)  # nothing pushed meanwhile: exactly as before the seal
    sealed = table.seal_pending()
    ids = rng.permutation(20)[:12]  # pushed while the step was being decided: one term a row
    grads = rng.standard_normal((12, 4)).astype(np.float32)
    for each in (table, reference):
        each.push(ids, grads)
    table.unseal(sealed)
    rows, sums, pushes = table.pending()
    reference_rows, reference_sums, reference_pushes = reference.pending()
    assert pushes == reference_pushes == 2
    # two terms a row: later + sealed is sealed + later exactly (addition commutes)
    order, reference_order = np.argsort(rows), np.argsort(reference_rows)
    np.testing.assert_array_equal(rows[order], reference_rows[reference_order])
    np.testing.assert_array_equal(sums[order], reference_sums[reference_order])


def test_a_refused_check_names_the_row_as_told_and_writes_nothing() -> None:
    table, reference = twins({"kind": "sgd", "lr": 1.0})
    rows = np.array([3, 9])
    sums = np.array([[0, 0, 0, 0], [3e38, 3e38, 0, 0]], dtype=np.float32)
    table.weights[9] = -3e38
    reference.weights[9] = -3e38
    with pytest.raises(InvalidRequest) as refused:
        table.check_step(rows, sums, 1.0, 1, names=np.array([1003, 1009]))
    assert refused.value.detail == (
        "update of table 't' refused: the new weights of row 1009 would not be finite in "
        "float32 (lr=1.0, optimizer sgd); nothing was changed")
    assert_same_table(table, reference)
    with pytest.raises(InvalidRequest, match="row 9 would not be finite"):
        table.take_step(rows, sums, 1.0, 1)  # the write path refuses the same way
    assert_same_table(table, reference)
