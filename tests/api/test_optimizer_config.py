"""Optimizers chosen at table creation, over HTTP: their hyper-parameters are checked and shown,
and a table of each kind trains as the loop oracle says."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from tests.api.helpers import NPZ, assert_table_bytes, create, npz_bytes, weights_of
from tests.naive_optimizers import NaiveTrainer

CONFIGS: dict[str, dict[str, Any]] = {
    "sgd": {"kind": "sgd", "lr": 0.2},
    "momentum": {"kind": "momentum", "lr": 0.1, "momentum": 0.7},
    "adagrad": {"kind": "adagrad", "lr": 0.4, "eps": 1e-4, "initial_accumulator_value": 0.5},
    "adam": {"kind": "adam", "lr": 0.05, "beta1": 0.85, "beta2": 0.99, "eps": 1e-7},
}


@pytest.mark.usefixtures("table_kind")
@pytest.mark.parametrize("kind", CONFIGS)
def test_a_table_of_each_optimizer_trains_as_the_loop_oracle(
    api: httpx.Client, table_name: str, kind: str
) -> None:
    config = CONFIGS[kind]
    created = create(api, table_name, dtype="float64", optimizer=config,
                     init={"kind": "normal", "std": 1.0})
    assert created["optimizer"] == config
    oracle = NaiveTrainer(weights_of(api, table_name), config)
    rng = np.random.default_rng(11)
    url = f"/v1/tables/{table_name}/gradients"
    for step in range(1, 9):
        for trainer in range(3):  # three trainers push, one applies
            ids = rng.integers(0, 10, size=(2, 4))  # 10 rows: duplicates within and across
            grads = rng.standard_normal((2, 4, 4))
            if trainer % 2:
                reply = api.post(url, content=npz_bytes(ids=ids, grads=grads), headers=NPZ)
            else:
                reply = api.post(url, json={"ids": ids.tolist(), "grads": grads.tolist()})
            assert reply.status_code == 200, reply.text
            oracle.push(ids, grads)
        applied = api.post(f"/v1/tables/{table_name}/apply")
        assert applied.json()["step"] == step
        oracle.apply()
        np.testing.assert_allclose(weights_of(api, table_name), oracle.weights, atol=1e-10, rtol=0)
    info = api.get(f"/v1/tables/{table_name}").json()
    assert (info["step"], info["optimizer"]) == (8, config)


@pytest.mark.parametrize(("optimizer", "shown"), [
    ({"kind": "sgd"}, {"kind": "sgd", "lr": 0.01}),
    ({}, {"kind": "sgd", "lr": 0.01}),
    ({"kind": "momentum", "lr": 1}, {"kind": "momentum", "lr": 1.0, "momentum": 0.9}),
    ({"kind": "adagrad"},
     {"kind": "adagrad", "lr": 0.01, "eps": 1e-10, "initial_accumulator_value": 0.0}),
    ({"kind": "adam", "beta2": 0.9},
     {"kind": "adam", "lr": 0.001, "beta1": 0.9, "beta2": 0.9, "eps": 1e-8}),
])
def test_table_info_shows_the_optimizer_with_every_hyper_parameter(
    api: httpx.Client, table_name: str, optimizer: dict[str, Any], shown: dict[str, Any]
) -> None:
    assert create(api, table_name, optimizer=optimizer)["optimizer"] == shown
    assert api.get(f"/v1/tables/{table_name}").json()["optimizer"] == shown
    listed = {t["name"]: t for t in api.get("/v1/tables").json()["tables"]}
    assert listed[table_name]["optimizer"] == shown


def test_optimizer_state_counts_in_the_table_bytes(api: httpx.Client, table_name: str) -> None:
    weights = 100 * 8 * 4
    for kind, arrays in (("sgd", 1), ("momentum", 2), ("adagrad", 2), ("adam", 3)):
        created = create(api, f"{table_name}-{kind}", num_embeddings=100, embedding_dim=8,
                         optimizer={"kind": kind})
        assert_table_bytes(created, arrays * weights)


def test_optimizer_state_counts_against_the_memory_budget(make_app: Any) -> None:
    from starlette.testclient import TestClient

    weights = 1000 * 16 * 4
    with TestClient(make_app(memory_budget_bytes=2 * weights + 100)) as client:
        spec = {"num_embeddings": 1000, "embedding_dim": 16}
        adam = {"name": "a", **spec, "optimizer": {"kind": "adam"}}
        too_big = client.post("/v1/tables", json=adam)
        assert too_big.status_code == 413
        assert f"needs {3 * weights} bytes" in too_big.json()["detail"]
        momentum = {"name": "m", **spec, "optimizer": {"kind": "momentum"}}
        fits = client.post("/v1/tables", json=momentum)
        assert fits.status_code == 201 and fits.json()["nbytes"] == 2 * weights


BAD = [
    ({"kind": "sgd", "lr": 0}, "optimizer.lr must be > 0, got 0"),
    ({"kind": "adam", "lr": -0.001}, "optimizer.lr must be > 0, got -0.001"),
    ({"kind": "sgd", "lr": "big"}, "optimizer.lr must be a number, got 'big'"),
    ({"kind": "momentum", "momentum": 1}, "optimizer.momentum must be in [0, 1), got 1"),
    ({"kind": "adam", "beta1": -0.1}, "optimizer.beta1 must be in [0, 1), got -0.1"),
    ({"kind": "adam", "beta2": 1.0}, "optimizer.beta2 must be in [0, 1), got 1.0"),
    ({"kind": "adam", "eps": 0}, "optimizer.eps must be > 0, got 0"),
    ({"kind": "adagrad", "eps": -1}, "optimizer.eps must be > 0, got -1"),
    ({"kind": "adagrad", "initial_accumulator_value": -0.5},
     "optimizer.initial_accumulator_value must be >= 0, got -0.5"),
    ({"kind": "sgd", "nesterov": True}, "optimizer.nesterov is not a parameter of 'sgd'"),
    ({"kind": "adam", "weight_decay": 0.1}, "optimizer.weight_decay is not a parameter of 'adam'"),
    ({"kind": "sgd", "lr": 10**400}, "optimizer.lr must be finite"),
    ({"kind": "rmsprop"}, "optimizer.kind"),
    ({"lr": 0.1, "kind": 3}, "optimizer.kind"),
]


@pytest.mark.parametrize(("optimizer", "detail"), BAD, ids=[d for _, d in BAD])
def test_nonsense_hyper_parameters_get_422_naming_field_and_value(
    api: httpx.Client, table_name: str, optimizer: dict[str, Any], detail: str
) -> None:
    reply = api.post("/v1/tables", json={"name": table_name, "num_embeddings": 10,
                                         "embedding_dim": 4, "optimizer": optimizer})
    assert reply.status_code == 422, reply.text
    assert reply.json()["detail"].startswith(detail)
    assert api.get(f"/v1/tables/{table_name}").status_code == 404
