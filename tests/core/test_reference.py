"""The core against the reference layer: bit-identical forward, backward and SGD."""

from __future__ import annotations

import numpy as np
import pytest

from service.core import EmbeddingTable, InitSpec, make_optimizer
from tests.reference import NaiveEmbedding, ReferenceEmbedding

pytestmark = pytest.mark.usefixtures("kernel_backend")  # every test on numba and on numpy

ID_SHAPES = {
    "scalar": (),
    "list-with-duplicates": (12,),
    "2-d": (3, 5),
    "3-d": (2, 3, 2),
}


def make_table(dtype: str, lr: float, num_embeddings: int = 7, dim: int = 4) -> EmbeddingTable:
    return EmbeddingTable(
        "t", num_embeddings, dim, make_optimizer({"kind": "sgd", "lr": lr}), dtype=dtype,
        init=InitSpec(kind="normal", std=1.0), seed=3,
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("id_shape", ID_SHAPES.values(), ids=ID_SHAPES.keys())
def test_steps_match_reference_and_naive_layers_bit_for_bit(dtype: str, id_shape: tuple) -> None:
    rng = np.random.default_rng(0)
    lr = 0.1
    table = make_table(dtype, lr)
    reference = ReferenceEmbedding(table.weights.copy())
    naive = NaiveEmbedding(table.weights)
    for _ in range(5):
        idx = rng.integers(0, 7, size=id_shape)  # few rows: duplicates are certain
        dout = rng.standard_normal((*id_shape, 4)).astype(dtype)

        out, step = table.lookup(idx)
        assert out.shape == (*id_shape, 4)
        np.testing.assert_array_equal(out, reference.forward(idx))
        np.testing.assert_array_equal(out, naive.forward(idx))

        table.push(idx, dout)
        reference.backward(dout)
        naive.zero_grad()
        naive.backward(idx, dout)
        result = table.apply()
        reference.sgd(lr)
        naive.sgd(lr)

        assert result.step == step + 1
        assert result.rows_updated == len(np.unique(idx))
        np.testing.assert_array_equal(table.weights, reference.params[0])
        np.testing.assert_array_equal(table.weights, naive.weights)


def test_duplicate_ids_sum_where_plain_fancy_assignment_would_drop_them() -> None:
    table = make_table("float64", lr=1.0, num_embeddings=3, dim=2)
    before = table.weights.copy()
    ids = np.array([1, 1, 1, 2])
    grads = np.array([[1.0, 2.0], [10.0, 20.0], [100.0, 200.0], [5.0, 5.0]])
    result = table.push(ids, grads)
    assert (result.rows, result.pending_rows) == (4, 2)
    table.apply()
    np.testing.assert_array_equal(table.weights[0], before[0])
    np.testing.assert_array_equal(table.weights[1], before[1] - [111.0, 222.0])
    np.testing.assert_array_equal(table.weights[2], before[2] - [5.0, 5.0])


def test_pushes_between_applies_sum_and_apply_clears_them() -> None:
    table = make_table("float64", lr=0.5, num_embeddings=4, dim=1)
    before = table.weights.copy()
    table.push(np.array([0, 3]), np.array([[2.0], [4.0]]))
    assert table.push(np.array([[3]]), np.array([[[6.0]]])).pending_rows == 2
    assert table.apply().rows_updated == 2
    np.testing.assert_array_equal(table.weights[:, 0], before[:, 0] - [1.0, 0.0, 0.0, 5.0])
    assert table.pending_rows == 0
    after = table.weights.copy()
    assert table.apply().rows_updated == 0  # nothing pending: nothing changes, step stays
    assert table.step == 1
    np.testing.assert_array_equal(table.weights, after)


def test_lr_override_applies_to_one_step_only() -> None:
    table = make_table("float64", lr=0.5, num_embeddings=2, dim=1)
    before = table.weights.copy()
    table.push(np.array([0]), np.array([[1.0]]))
    table.apply(lr=2.0)
    table.push(np.array([0]), np.array([[1.0]]))
    table.apply()
    np.testing.assert_array_equal(table.weights[0], before[0] - 2.0 - 0.5)


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    def weights(seed: int, kind: str) -> np.ndarray:
        return EmbeddingTable(
            "t", 50, 8, make_optimizer({}), init=InitSpec(kind=kind, low=-1, high=1), seed=seed
        ).weights

    for kind in ("normal", "uniform"):
        np.testing.assert_array_equal(weights(1, kind), weights(1, kind))
        assert not np.array_equal(weights(1, kind), weights(2, kind))
    uniform = weights(4, "uniform")
    assert uniform.min() >= -1 and uniform.max() < 1
    zeros = EmbeddingTable("z", 3, 2, make_optimizer({}), init=InitSpec(kind="zeros")).weights
    np.testing.assert_array_equal(zeros, np.zeros((3, 2), dtype=np.float32))
