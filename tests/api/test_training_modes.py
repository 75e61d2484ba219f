"""Training modes over HTTP: asynchronous pushes, staleness, averaged applies, sparse memory.

Every test runs over the in-process app and a real uvicorn process (the `api` fixture), on a
fixed table and on a dynamic one (the `table_kind` fixture), but the last, which is about a fixed
table's size.
"""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from tests.api.helpers import (
    NPY,
    NPZ,
    assert_table_bytes,
    create,
    fingerprint,
    npy_bytes,
    npz_bytes,
    push_reply,
    weights_of,
)
from tests.naive_optimizers import NaiveTrainer

ADAGRAD = {"kind": "adagrad", "lr": 0.5, "eps": 1e-6, "initial_accumulator_value": 0.1}


def info(api: httpx.Client, name: str) -> dict[str, Any]:
    reply = api.get(f"/v1/tables/{name}")
    assert reply.status_code == 200, reply.text
    return reply.json()


def push(api: httpx.Client, name: str, **body: Any) -> httpx.Response:
    return api.post(f"/v1/tables/{name}/gradients", json=body)


def apply(api: httpx.Client, name: str, **body: Any) -> httpx.Response:
    reply = api.post(f"/v1/tables/{name}/apply", json=body)
    assert reply.status_code == 200, reply.text
    return reply


def steps_of_sgd(api: httpx.Client, name: str, count: int) -> None:
    """Advance the table `count` steps (a push of row 0 and an apply each)."""
    for _ in range(count):
        assert push(api, name, ids=[0], grads=[[0.0, 0.0, 0.0, 0.0]]).status_code == 200
        apply(api, name)


# -- asynchronous pushes -------------------------------------------------------------------------
@pytest.mark.usefixtures("table_kind")
def test_async_json_push_is_one_step_of_the_summed_gradient(
    api: httpx.Client, table_name: str
) -> None:
    """adagrad is not linear: one step of g1 + g2 differs from a step of g1 then one of g2, so
    this tells "duplicates summed first" apart from "each duplicate a step"."""
    create(api, table_name, dtype="float64", optimizer=ADAGRAD, init={"kind": "normal", "std": 1.0})
    before = weights_of(api, table_name)
    ids = np.array([3, 3, 5, 3])
    grads = np.arange(16, dtype=np.float64).reshape(4, 4) - 6.5
    reply = push(api, table_name, ids=ids.tolist(), grads=grads.tolist(), apply=True)
    assert reply.status_code == 200, reply.text
    assert reply.json() == push_reply(4, 0, 1, 2)
    oracle = NaiveTrainer(before, ADAGRAD)
    oracle.push(ids, grads, apply=True)
    after = weights_of(api, table_name)
    np.testing.assert_allclose(after, oracle.weights, atol=1e-12, rtol=0)
    untouched = [0, 1, 2, 4, 6, 7, 8, 9]
    np.testing.assert_array_equal(after[untouched], before[untouched])
    one_at_a_time = NaiveTrainer(before, ADAGRAD)
    for row, grad in zip(ids, grads, strict=True):
        one_at_a_time.push(np.array([row]), grad[None], apply=True)
    assert np.abs(after[3] - one_at_a_time.weights[3]).min() > 1e-3
    table = info(api, table_name)
    assert (table["step"], table["pending_rows"]) == (1, 0)


@pytest.mark.usefixtures("table_kind")
def test_async_npz_push_with_apply_query_parameter(api: httpx.Client, table_name: str) -> None:
    create(api, table_name, dtype="float64", optimizer={"kind": "sgd", "lr": 0.5})
    before = weights_of(api, table_name)
    ids = np.array([[1, 1], [2, 1]])
    grads = np.linspace(-1, 1, 16).reshape(2, 2, 4)
    url = f"/v1/tables/{table_name}/gradients"
    reply = api.post(f"{url}?apply=true", content=npz_bytes(ids=ids, grads=grads), headers=NPZ)
    assert reply.status_code == 200, reply.text
    assert reply.json() == push_reply(4, 0, 1, 2)
    dense = np.zeros_like(before)
    np.add.at(dense, ids, grads)
    np.testing.assert_array_equal(weights_of(api, table_name), before - 0.5 * dense)

    pending = api.post(f"{url}?apply=false", content=npz_bytes(ids=ids, grads=grads), headers=NPZ)
    assert pending.json() == push_reply(4, 2, 1, 0)
    unchanged = fingerprint(api)
    refused = api.post(f"{url}?apply=maybe", content=npz_bytes(ids=ids, grads=grads), headers=NPZ)
    assert refused.status_code == 422
    assert refused.json() == {"detail": "query parameter apply must be true or false, got 'maybe'"}
    assert fingerprint(api) == unchanged


@pytest.mark.usefixtures("table_kind")
def test_async_push_leaves_the_pending_gradient_of_synchronous_pushes(
    api: httpx.Client, table_name: str
) -> None:
    create(api, table_name, dtype="float64", optimizer={"kind": "sgd", "lr": 1.0})
    before = weights_of(api, table_name)
    g = [[1.0, 2.0, 3.0, 4.0]]
    assert push(api, table_name, ids=[7], grads=g).json()["pending_rows"] == 1
    reply = push(api, table_name, ids=[7], grads=g, apply=True).json()
    assert reply == push_reply(1, 1, 1, 1)
    assert apply(api, table_name).json() == {"step": 2, "rows_updated": 1}
    np.testing.assert_array_equal(weights_of(api, table_name)[7], before[7] - g[0] - g[0])


@pytest.mark.usefixtures("table_kind")
def test_empty_async_push_is_not_a_step(api: httpx.Client, table_name: str) -> None:
    create(api, table_name)
    body = npz_bytes(ids=np.empty(0, np.int64), grads=np.empty((0, 4), np.float32))
    reply = api.post(f"/v1/tables/{table_name}/gradients?apply=true", content=body, headers=NPZ)
    assert reply.status_code == 200, reply.text
    assert reply.json() == push_reply(0, 0, 0, 0)
    assert info(api, table_name)["step"] == 0


# -- staleness -----------------------------------------------------------------------------------
@pytest.mark.usefixtures("table_kind")
def test_lookup_replies_carry_the_table_step(api: httpx.Client, table_name: str) -> None:
    create(api, table_name)
    url = f"/v1/tables/{table_name}/lookup"
    for step in range(3):
        as_json = api.post(url, json={"ids": [1, 2]})
        assert as_json.json()["step"] == step and as_json.headers["x-table-step"] == str(step)
        as_npy = api.post(url, content=npy_bytes(np.array([1])), headers=NPY)
        assert as_npy.headers["x-table-step"] == str(step)
        steps_of_sgd(api, table_name, 1)


@pytest.mark.usefixtures("table_kind")
def test_stale_pushes_are_refused_with_409_saying_how_stale(
    api: httpx.Client, table_name: str
) -> None:
    create(api, table_name, max_staleness=1)
    assert info(api, table_name)["max_staleness"] == 1
    steps_of_sgd(api, table_name, 3)
    g = [[1.0, 1.0, 1.0, 1.0]]
    for fresh_enough in (3, 2):
        assert push(api, table_name, ids=[4], grads=g, step=fresh_enough).status_code == 200
    apply(api, table_name)  # step 4 now
    unchanged = fingerprint(api)
    reply = push(api, table_name, ids=[4], grads=g, step=2)
    assert reply.status_code == 409
    assert reply.json() == {"detail": (
        f"gradient computed at step 2 is 2 steps stale; table {table_name!r} is at step 4 "
        "and accepts at most max_staleness=1")}
    url = f"/v1/tables/{table_name}/gradients"
    body = npz_bytes(ids=np.array([4]), grads=np.ones((1, 4), np.float32))
    for query in ("?step=0", "?step=1&apply=true"):
        refused = api.post(url + query, content=body, headers=NPZ)
        assert refused.status_code == 409 and "steps stale" in refused.json()["detail"]
    assert push(api, table_name, ids=[4], grads=g, step=1, apply=True).status_code == 409
    assert fingerprint(api) == unchanged
    assert api.post(url + "?step=3&apply=true", content=body, headers=NPZ).status_code == 200


@pytest.mark.usefixtures("table_kind")
def test_zero_staleness_accepts_only_the_current_step(api: httpx.Client, table_name: str) -> None:
    create(api, table_name, max_staleness=0)
    steps_of_sgd(api, table_name, 1)
    g = [[1.0, 1.0, 1.0, 1.0]]
    assert push(api, table_name, ids=[1], grads=g, step=1).status_code == 200
    reply = push(api, table_name, ids=[1], grads=g, step=0)
    assert reply.status_code == 409 and "1 steps stale" in reply.json()["detail"]
    assert push(api, table_name, ids=[1], grads=g).status_code == 200  # no step: no check


@pytest.mark.usefixtures("table_kind")
def test_without_max_staleness_any_past_step_is_accepted(
    api: httpx.Client, table_name: str
) -> None:
    create(api, table_name)
    assert info(api, table_name)["max_staleness"] is None
    steps_of_sgd(api, table_name, 5)
    assert push(api, table_name, ids=[1], grads=[[1.0] * 4], step=0).status_code == 200


@pytest.mark.usefixtures("table_kind")
@pytest.mark.parametrize(("step", "detail"), [
    (6, "step 6 is ahead of table {name!r}, which is at step 2"),
    (-1, "step must be >= 0, got -1"),
    ("2", "step must be an integer, got '2'"),
    (1.5, "step must be an integer, got 1.5"),
    (True, "step must be an integer, got True"),
])
def test_impossible_steps_are_refused_with_422(
    api: httpx.Client, table_name: str, step: Any, detail: str
) -> None:
    create(api, table_name, max_staleness=3)
    steps_of_sgd(api, table_name, 2)
    unchanged = fingerprint(api)
    reply = push(api, table_name, ids=[1], grads=[[1.0] * 4], step=step)
    assert reply.status_code == 422
    assert reply.json() == {"detail": detail.format(name=table_name)}
    assert fingerprint(api) == unchanged


@pytest.mark.usefixtures("table_kind")
def test_step_query_parameter_must_be_an_integer(api: httpx.Client, table_name: str) -> None:
    create(api, table_name, max_staleness=3)
    body = npz_bytes(ids=np.array([1]), grads=np.ones((1, 4), np.float32))
    url = f"/v1/tables/{table_name}/gradients"
    reply = api.post(url + "?step=recent", content=body, headers=NPZ)
    assert reply.status_code == 422
    assert reply.json() == {"detail": "query parameter step must be an integer, got 'recent'"}
    ahead = api.post(url + "?step=1", content=body, headers=NPZ)
    assert ahead.status_code == 422 and "ahead" in ahead.json()["detail"]


def test_max_staleness_must_be_a_non_negative_integer(api: httpx.Client, table_name: str) -> None:
    for bad in (-1, 1.5, "two"):
        reply = api.post("/v1/tables", json={"name": table_name, "num_embeddings": 10,
                                             "embedding_dim": 4, "max_staleness": bad})
        assert reply.status_code == 422
        assert reply.json()["detail"].startswith("max_staleness")
    assert api.get(f"/v1/tables/{table_name}").status_code == 404


# -- average -------------------------------------------------------------------------------------
@pytest.mark.usefixtures("table_kind")
def test_average_divides_by_the_pushes_since_the_last_apply(
    api: httpx.Client, table_name: str
) -> None:
    """Three trainers push; row 9 only in one push is still divided by 3 (mean over trainers)."""
    lr = 0.5
    create(api, table_name, dtype="float64", optimizer={"kind": "sgd", "lr": lr},
           init={"kind": "normal", "std": 1.0})
    weights = weights_of(api, table_name)
    rng = np.random.default_rng(0)
    for trainers in (3, 2, 1):
        pushes = [(rng.choice([1, 2, 3], size=5), rng.standard_normal((5, 4)))
                  for _ in range(trainers)]
        pushes[0] = (np.append(pushes[0][0], 9), np.vstack([pushes[0][1], np.ones((1, 4))]))
        for ids, grads in pushes:
            assert push(api, table_name, ids=ids.tolist(), grads=grads.tolist()).status_code == 200
        assert apply(api, table_name, average=True).json()["rows_updated"] == 4
        dense = np.zeros_like(weights)
        for ids, grads in pushes:
            np.add.at(dense, ids, grads)
        weights = weights - lr * (dense / trainers if trainers > 1 else dense)
        np.testing.assert_array_equal(weights_of(api, table_name), weights)


@pytest.mark.usefixtures("table_kind")
def test_without_average_the_pushes_are_summed(api: httpx.Client, table_name: str) -> None:
    create(api, table_name, dtype="float64", optimizer={"kind": "sgd", "lr": 1.0},
           init={"kind": "zeros"})
    for _ in range(4):
        push(api, table_name, ids=[2], grads=[[1.0, 2.0, 3.0, 4.0]])
    apply(api, table_name, average=False)
    np.testing.assert_array_equal(weights_of(api, table_name)[2], [-4.0, -8.0, -12.0, -16.0])


@pytest.mark.usefixtures("table_kind")
def test_average_with_adam_matches_the_loop_oracle(api: httpx.Client, table_name: str) -> None:
    config = {"kind": "adam", "lr": 0.1, "beta1": 0.5, "beta2": 0.9, "eps": 1e-6}
    create(api, table_name, dtype="float64", optimizer=config, init={"kind": "normal", "std": 1.0})
    oracle = NaiveTrainer(weights_of(api, table_name), config)
    rng = np.random.default_rng(1)
    for _ in range(4):
        for _ in range(3):
            ids, grads = rng.integers(0, 10, size=6), rng.standard_normal((6, 4))
            push(api, table_name, ids=ids.tolist(), grads=grads.tolist())
            oracle.push(ids, grads)
        apply(api, table_name, average=True)
        oracle.apply(average=True)
    np.testing.assert_allclose(weights_of(api, table_name), oracle.weights, atol=1e-10, rtol=0)


@pytest.mark.usefixtures("table_kind")
@pytest.mark.parametrize(("body", "detail"), [
    ({"average": "maybe"}, "average"),
    ({"lr": 0}, "lr"),
    ({"lr": -1.0}, "lr"),
    ({"mean": True}, "mean is not a field of this request"),
])
def test_bad_apply_options_are_refused(
    api: httpx.Client, table_name: str, body: dict[str, Any], detail: str
) -> None:
    create(api, table_name)
    push(api, table_name, ids=[1], grads=[[1.0] * 4])
    unchanged = fingerprint(api)
    reply = api.post(f"/v1/tables/{table_name}/apply", json=body)
    assert reply.status_code == 422
    assert reply.json()["detail"].startswith(detail)
    assert fingerprint(api) == unchanged


# -- sparse memory -------------------------------------------------------------------------------
def test_pending_memory_grows_with_pushed_rows_not_table_size(
    api: httpx.Client, table_name: str
) -> None:
    """The same pushes into a 10-row and a 4-million-row table hold the same pending bytes;
    a dense gradient buffer (or any per-row map) on the large one would be megabytes."""
    dim, pushed = 4, 300
    small, large = f"{table_name}-small", f"{table_name}-large"
    growth = {}
    for name, num_embeddings in ((small, 1000), (large, 4_000_000)):
        created = create(api, name, num_embeddings=num_embeddings, embedding_dim=dim,
                         optimizer={"kind": "adam"}, init={"kind": "zeros"})
        assert_table_bytes(created, 3 * num_embeddings * dim * 4)  # weights + 2 moments
        ids = np.arange(0, pushed * 3, 3)  # 300 distinct rows
        body = npz_bytes(ids=ids, grads=np.ones((pushed, dim), np.float32))
        for _ in range(2):  # the same rows twice: no new pending rows the second time
            reply = api.post(f"/v1/tables/{name}/gradients", content=body, headers=NPZ)
            assert reply.json()["pending_rows"] == pushed
        growth[name] = info(api, name)["nbytes"] - created["nbytes"]
        apply(api, name)
        assert info(api, name)["pending_rows"] == 0
    assert growth[small] == growth[large]
    per_row = dim * 4 + 8 + 16  # the row's sum, its id, its entry in the sorted index
    assert pushed * per_row <= growth[large] <= 2 * pushed * per_row
    for name in (small, large):
        assert api.delete(f"/v1/tables/{name}").status_code == 204
