"""Table management endpoints, over ASGI and a real uvicorn process."""

from __future__ import annotations

import httpx
import numpy as np

from tests.api.helpers import assert_table_bytes, create, weights_of


def test_create_returns_table_info(api: httpx.Client, table_name: str) -> None:
    info = create(api, table_name, num_embeddings=100, embedding_dim=8, dtype="float64",
                  optimizer={"kind": "sgd", "lr": 0.5},
                  init={"kind": "uniform", "low": -1, "high": 1})
    assert_table_bytes(info, 100 * 8 * 8)
    del info["nbytes"], info["shards"]
    assert info == {
        "name": table_name, "num_embeddings": 100, "embedding_dim": 8, "dtype": "float64",
        "init": {"kind": "uniform", "low": -1.0, "high": 1.0}, "seed": 0,
        "optimizer": {"kind": "sgd", "lr": 0.5}, "max_staleness": None, "step": 0,
        "pending_rows": 0, "labels": 0,
    }


def test_defaults_are_float32_normal_sgd(api: httpx.Client, table_name: str) -> None:
    reply = api.post("/v1/tables",
                     json={"name": table_name, "num_embeddings": 3, "embedding_dim": 2})
    assert reply.status_code == 201
    info = reply.json()
    assert (info["dtype"], info["init"], info["optimizer"], info["seed"]) == (
        "float32", {"kind": "normal", "std": 0.01}, {"kind": "sgd", "lr": 0.01}, None)


def test_get_list_delete(api: httpx.Client, table_name: str) -> None:
    create(api, table_name)
    assert api.get(f"/v1/tables/{table_name}").json()["name"] == table_name
    names = [t["name"] for t in api.get("/v1/tables").json()["tables"]]
    assert table_name in names
    reply = api.delete(f"/v1/tables/{table_name}")
    assert (reply.status_code, reply.content) == (204, b"")
    assert api.get(f"/v1/tables/{table_name}").status_code == 404
    assert table_name not in [t["name"] for t in api.get("/v1/tables").json()["tables"]]


def test_duplicate_name_is_409_and_keeps_the_first(api: httpx.Client, table_name: str) -> None:
    create(api, table_name, seed=1)
    before = weights_of(api, table_name)
    reply = api.post("/v1/tables",
                     json={"name": table_name, "num_embeddings": 5, "embedding_dim": 2})
    assert reply.status_code == 409
    assert table_name in reply.json()["detail"]
    np.testing.assert_array_equal(weights_of(api, table_name), before)


def test_same_seed_gives_same_weights(api: httpx.Client, table_name: str) -> None:
    create(api, table_name + "a", seed=42)
    create(api, table_name + "b", seed=42)
    create(api, table_name + "c", seed=43)
    a, b, c = (weights_of(api, table_name + s) for s in "abc")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_zeros_init(api: httpx.Client, table_name: str) -> None:
    create(api, table_name, init={"kind": "zeros"})
    np.testing.assert_array_equal(weights_of(api, table_name), np.zeros((10, 4), np.float32))


def test_init_that_cannot_give_finite_weights_is_a_422(api: httpx.Client, table_name: str) -> None:
    """The reported cases: normal std 1e39 on float32, uniform over [-1e308, 1e308] on float64."""
    for dtype, init, start in (
        ("float32", {"kind": "normal", "std": 1e39}, "init.std must be at most 2.127e+37"),
        ("float64", {"kind": "uniform", "low": -1e308, "high": 1e308},
         "init.high - init.low must be at most 1.798e+308"),
    ):
        reply = api.post("/v1/tables", json={"name": table_name, "num_embeddings": 3,
                                             "embedding_dim": 2, "dtype": dtype, "init": init})
        assert reply.status_code == 422, reply.text
        assert reply.json()["detail"].startswith(start)
        assert api.get(f"/v1/tables/{table_name}").status_code == 404
