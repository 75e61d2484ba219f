"""The optimizers against independent oracles, over many steps with duplicate ids.

Every test drives an EmbeddingTable and an oracle (Python loops over a dense table, and PyTorch
where it has the same rule) with the same pushes, and compares weights and optimizer state after
every step: float64 tables agree within 1e-10.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from service.core import EmbeddingTable, InitSpec, make_optimizer
from service.core.errors import InvalidRequest
from service.core.optimizers import OPTIMIZERS
from tests.naive_optimizers import NaiveTrainer, TorchTrainer

pytestmark = pytest.mark.usefixtures("kernel_backend")  # every test on numba and on numpy

NUM_EMBEDDINGS, DIM = 40, 5
ROUNDS = 25
CONFIGS: dict[str, dict[str, Any]] = {  # non-default hyper-parameters, so each one is exercised
    "sgd": {"kind": "sgd", "lr": 0.1},
    "momentum": {"kind": "momentum", "lr": 0.05, "momentum": 0.8},
    "adagrad": {"kind": "adagrad", "lr": 0.3, "eps": 1e-3, "initial_accumulator_value": 0.2},
    "adam": {"kind": "adam", "lr": 0.05, "beta1": 0.8, "beta2": 0.95, "eps": 1e-6},
}
TORCH_KINDS = ["sgd", "adagrad", "adam"]  # torch's SGD momentum is a different (dense) rule


def make_table(config: dict[str, Any], dtype: str = "float64") -> EmbeddingTable:
    return EmbeddingTable(
        "t", NUM_EMBEDDINGS, DIM, make_optimizer(config), dtype=dtype,
        init=InitSpec(kind="normal", std=1.0), seed=7,
    )


def rounds(seed: int) -> Iterator[list[tuple[np.ndarray, np.ndarray]]]:
    """ROUNDS rounds of 1-4 pushes; 12-30 ids from 40 rows: duplicates within and across
    pushes, rows left out of whole rounds (lazy rules must not touch them), n-d id arrays."""
    rng = np.random.default_rng(seed)
    for _ in range(ROUNDS):
        pushes = []
        for _ in range(int(rng.integers(1, 5))):
            shape = [(12,), (30,), (3, 5)][int(rng.integers(0, 3))]
            hot = rng.integers(0, NUM_EMBEDDINGS, size=8)  # this push draws from 8 rows
            ids = rng.choice(hot, size=shape)
            pushes.append((ids, rng.standard_normal((*shape, DIM))))
        yield pushes


def assert_same(table: EmbeddingTable, oracle: NaiveTrainer | TorchTrainer) -> None:
    np.testing.assert_allclose(table.weights, oracle.weights, atol=1e-10, rtol=0)
    for name, values in oracle.state.items():
        np.testing.assert_allclose(table.state[name], values, atol=1e-10, rtol=0, err_msg=name)


@pytest.mark.parametrize("kind", CONFIGS)
def test_synchronous_rounds_match_the_loop_oracle(kind: str) -> None:
    table = make_table(CONFIGS[kind])
    oracle = NaiveTrainer(table.weights, CONFIGS[kind])
    for pushes in rounds(seed=1):
        for ids, grads in pushes:
            table.push(ids, grads)
            oracle.push(ids, grads)
        result = table.apply()
        oracle.apply()
        assert result.step == table.step == oracle.step
        assert result.rows_updated == len(np.unique(np.concatenate([i.ravel() for i, _ in pushes])))
        assert_same(table, oracle)
    assert table.step == ROUNDS


@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_synchronous_rounds_match_torch(kind: str) -> None:
    pytest.importorskip("torch")
    table = make_table(CONFIGS[kind])
    oracle = TorchTrainer(table.weights, CONFIGS[kind])
    for pushes in rounds(seed=2):
        for ids, grads in pushes:
            table.push(ids, grads)
            oracle.push(ids, grads)
        table.apply()
        oracle.apply()
        assert_same(table, oracle)


@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_asynchronous_pushes_match_torch_one_step_per_push(kind: str) -> None:
    pytest.importorskip("torch")
    table = make_table(CONFIGS[kind])
    oracle = TorchTrainer(table.weights, CONFIGS[kind])
    steps = 0
    for pushes in rounds(seed=3):
        for ids, grads in pushes:
            result = table.push(ids, grads, apply=True)
            oracle.push(ids, grads, apply=True)
            steps += 1
            assert result.step == steps
            assert result.rows_updated == len(np.unique(ids))
            assert result.pending_rows == 0
            assert_same(table, oracle)


@pytest.mark.parametrize("kind", CONFIGS)
def test_asynchronous_pushes_match_the_loop_oracle(kind: str) -> None:
    table = make_table(CONFIGS[kind])
    oracle = NaiveTrainer(table.weights, CONFIGS[kind])
    for pushes in rounds(seed=4):
        for ids, grads in pushes:
            table.push(ids, grads, apply=True)
            oracle.push(ids, grads, apply=True)
        assert table.step == oracle.step
        assert_same(table, oracle)


@pytest.mark.parametrize("kind", CONFIGS)
def test_average_and_lr_override_match_the_loop_oracle(kind: str) -> None:
    table = make_table(CONFIGS[kind])
    oracle = NaiveTrainer(table.weights, CONFIGS[kind])
    for number, pushes in enumerate(rounds(seed=5)):
        for ids, grads in pushes:
            table.push(ids, grads)
            oracle.push(ids, grads)
        lr = None if number % 2 else 0.01 * (number + 1)
        table.apply(lr=lr, average=True)
        oracle.apply(lr=lr, average=True)
        assert_same(table, oracle)


def test_mixed_synchronous_and_asynchronous_steps_share_one_step_count() -> None:
    """Adam's bias correction uses the table's step, which async pushes advance too; an async
    push leaves the pending gradient of other pushes alone."""
    table = make_table(CONFIGS["adam"])
    oracle = NaiveTrainer(table.weights, CONFIGS["adam"])
    for number, pushes in enumerate(rounds(seed=6)):
        for ids, grads in pushes:
            table.push(ids, grads, apply=number % 3 == 0)
            oracle.push(ids, grads, apply=number % 3 == 0)
        table.apply()
        oracle.apply()
        assert table.step == oracle.step
        assert_same(table, oracle)


@pytest.mark.parametrize("kind", CONFIGS)
def test_float32_tables_follow_the_float64_oracle_to_float32_precision(kind: str) -> None:
    table = make_table(CONFIGS[kind], dtype="float32")
    oracle = NaiveTrainer(table.weights, CONFIGS[kind])
    for pushes in rounds(seed=8):
        for ids, grads in pushes:
            table.push(ids, grads.astype(np.float32))
            oracle.push(ids, grads.astype(np.float32))
        table.apply()
        oracle.apply()
    assert table.weights.dtype == np.float32
    assert all(state.dtype == np.float32 for state in table.state.values())
    np.testing.assert_allclose(table.weights, oracle.weights, atol=2e-4, rtol=0)


def test_rows_without_gradient_keep_weights_and_state_bit_for_bit() -> None:
    """Lazy rules: momentum does not keep moving an untouched row; adam does not decay its
    moments."""
    for kind in CONFIGS:
        table = make_table(CONFIGS[kind])
        table.push(np.array([1, 2, 2]), np.ones((3, DIM)))
        table.apply()
        before = table.weights.copy(), {n: s.copy() for n, s in table.state.items()}
        table.push(np.array([3]), np.ones((1, DIM)))
        table.apply()
        untouched = np.arange(NUM_EMBEDDINGS) != 3
        np.testing.assert_array_equal(table.weights[untouched], before[0][untouched])
        for name, state in table.state.items():
            np.testing.assert_array_equal(state[untouched], before[1][name][untouched])


# -- configuration -----------------------------------------------------------------------------
def test_config_lists_every_hyper_parameter_with_its_default() -> None:
    assert make_optimizer({"kind": "sgd"}).config() == {"kind": "sgd", "lr": 0.01}
    assert make_optimizer({"kind": "momentum"}).config() == {
        "kind": "momentum", "lr": 0.01, "momentum": 0.9}
    assert make_optimizer({"kind": "adagrad", "lr": 1}).config() == {
        "kind": "adagrad", "lr": 1.0, "eps": 1e-10, "initial_accumulator_value": 0.0}
    assert make_optimizer({"kind": "adam"}).config() == {
        "kind": "adam", "lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    assert make_optimizer({}).config()["kind"] == "sgd"
    assert sorted(OPTIMIZERS) == ["adagrad", "adam", "momentum", "sgd"]


def test_state_is_allocated_per_row_and_counted_in_nbytes() -> None:
    itemsize = 8
    weights = NUM_EMBEDDINGS * DIM * itemsize
    arrays = {"sgd": 0, "momentum": 1, "adagrad": 1, "adam": 2}
    for kind, count in arrays.items():
        table = make_table(CONFIGS[kind])
        assert len(table.state) == count
        assert all(s.shape == (NUM_EMBEDDINGS, DIM) for s in table.state.values())
        assert table.nbytes == weights * (1 + count)
        assert table.optimizer.state_bytes((NUM_EMBEDDINGS, DIM), np.dtype("float64")) == (
            weights * count)
    adagrad = make_table(CONFIGS["adagrad"])
    np.testing.assert_array_equal(adagrad.state["sum_squares"], 0.2)


BAD_CONFIGS = [
    ({"kind": "sgd", "lr": 0}, "optimizer.lr must be > 0, got 0"),
    ({"kind": "adam", "lr": -0.1}, "optimizer.lr must be > 0, got -0.1"),
    ({"kind": "sgd", "lr": "fast"}, "optimizer.lr must be a number, got 'fast'"),
    ({"kind": "sgd", "lr": True}, "optimizer.lr must be a number, got True"),
    ({"kind": "sgd", "lr": float("nan")}, "optimizer.lr must be finite, got nan"),
    ({"kind": "sgd", "lr": 10**400}, "optimizer.lr must be finite"),
    ({"kind": "momentum", "momentum": 1.0}, "optimizer.momentum must be in [0, 1), got 1.0"),
    ({"kind": "momentum", "momentum": -0.5}, "optimizer.momentum must be in [0, 1), got -0.5"),
    ({"kind": "adam", "beta1": 1}, "optimizer.beta1 must be in [0, 1), got 1"),
    ({"kind": "adam", "beta2": 1.5}, "optimizer.beta2 must be in [0, 1), got 1.5"),
    ({"kind": "adam", "eps": 0}, "optimizer.eps must be > 0, got 0"),
    ({"kind": "adagrad", "eps": -1e-8}, "optimizer.eps must be > 0, got -1e-08"),
    ({"kind": "adagrad", "initial_accumulator_value": -1},
     "optimizer.initial_accumulator_value must be >= 0, got -1"),
    ({"kind": "sgd", "momentum": 0.9}, "optimizer.momentum is not a parameter of 'sgd'"),
    ({"kind": "adam", "betas": [0.9, 0.99]}, "optimizer.betas is not a parameter of 'adam'"),
    ({"kind": "rmsprop"}, "optimizer.kind must be one of"),
    ({"kind": ["sgd"]}, "optimizer.kind must be one of"),
]


@pytest.mark.parametrize(("config", "message"), BAD_CONFIGS, ids=[m for _, m in BAD_CONFIGS])
def test_nonsense_hyper_parameters_are_refused_naming_field_and_value(
    config: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest) as error:
        make_optimizer(config)
    assert error.value.detail.startswith(message)


def test_hyper_parameters_at_the_edges_of_their_ranges_are_accepted() -> None:
    assert make_optimizer({"kind": "momentum", "momentum": 0}).config()["momentum"] == 0.0
    assert make_optimizer({"kind": "adam", "beta1": 0, "beta2": 0.0})
    assert make_optimizer({"kind": "adagrad", "initial_accumulator_value": 0})
    assert make_optimizer({"kind": "sgd", "lr": 1e-300}).config()["lr"] == 1e-300
