"""What only dynamic tables do, over both transports: TableInfo's settings and row counts, any
64-bit id in JSON and .npy (uint64 the same keys as int64), initial rows for keys without one,
admission's dropped rows, eviction in TableInfo, .npz weights, labels and neighbours by key.
(What they share with fixed tables runs in the shared suites: the `table_kind` fixture.)"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from service.core.dynamic import DynamicSpec, DynamicTable
from service.core.initializers import InitSpec
from service.core.optimizers import make_optimizer
from tests.api.helpers import NPY, NPZ, load_npy, npy_bytes, npz_bytes
from tests.conftest import LiveServer

WIDE = [2**64 - 1, 2**63, 2**63 + 12345]  # uint64 keys: the int64 of the same bits
WIDE_AS_INT64 = [-1, -(2**63), -(2**63) + 12345]


def create_dynamic(api: httpx.Client, name: str, **settings: Any) -> dict[str, Any]:
    reply = api.post("/v1/tables", json={"name": name, "embedding_dim": 4, "seed": 5,
                                         "optimizer": {"kind": "sgd", "lr": 1.0},
                                         "dynamic": settings})
    assert reply.status_code == 201, reply.text
    return reply.json()


def twin(**settings: Any) -> DynamicTable:
    """The same table in-process: its initial rows are the service's."""
    return DynamicTable("twin", 4, make_optimizer({"kind": "sgd", "lr": 1.0}), seed=5,
                        init=InitSpec(), settings=DynamicSpec(**settings))


def lookup(api: httpx.Client, name: str, ids: Any) -> np.ndarray:
    reply = api.post(f"/v1/tables/{name}/lookup", content=npy_bytes(np.asarray(ids)),
                     headers=NPY)
    assert reply.status_code == 200, reply.text
    return load_npy(reply.content)


def test_table_info_of_a_dynamic_table(api: httpx.Client, table_name: str) -> None:
    info = create_dynamic(api, table_name, capacity=100)
    assert info == {
        "name": table_name, "num_embeddings": None, "embedding_dim": 4, "dtype": "float32",
        "init": {"kind": "normal", "std": 0.01}, "seed": 5,
        "optimizer": {"kind": "sgd", "lr": 1.0}, "max_staleness": None, "step": 0,
        "pending_rows": 0, "labels": 0, "nbytes": info["nbytes"], "shards": info["shards"],
        "dynamic": {"capacity": 100, "admit_after": 1, "evict": "lru", "ttl_steps": None,
                    "max_candidates": 1_000_000},
        "rows": 0, "evicted_rows": 0,
    }
    assert api.get(f"/v1/tables/{table_name}").json() == info
    assert info in api.get("/v1/tables").json()["tables"]


def test_a_seed_is_chosen_and_kept_when_none_is_given(api: httpx.Client, table_name: str) -> None:
    reply = api.post("/v1/tables", json={"name": table_name, "embedding_dim": 2, "dynamic": {}})
    seed = reply.json()["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**63
    assert api.get(f"/v1/tables/{table_name}").json()["seed"] == seed


def test_any_64_bit_id_in_json_and_npy(api: httpx.Client, table_name: str) -> None:
    """A JSON list may mix negative ids and ids of 2**63 and more (numpy alone would make it
    floats); .npy ids may be uint64. Both are the int64 keys of the same bits; a key without a
    row reads its initial row, the same on every call."""
    create_dynamic(api, table_name)
    initial = twin().initial_rows(np.array([5, *WIDE_AS_INT64]))
    by_json = api.post(f"/v1/tables/{table_name}/lookup", json={"ids": [5, *WIDE]}).json()
    np.testing.assert_array_equal(np.array(by_json["vectors"], np.float32), initial)
    np.testing.assert_array_equal(lookup(api, table_name, np.array(WIDE, np.uint64)), initial[1:])
    np.testing.assert_array_equal(lookup(api, table_name, WIDE_AS_INT64), initial[1:])
    reply = api.post(f"/v1/tables/{table_name}/gradients",
                     json={"ids": [[-1, 2**64 - 1], [2**63, 7]], "grads": [[[1.0] * 4] * 2] * 2})
    assert reply.json() == {"rows": 4, "pending_rows": 3, "step": 0, "rows_updated": 0,
                            "dropped_rows": 0}
    assert api.post(f"/v1/tables/{table_name}/apply").json() == {"step": 1, "rows_updated": 3}
    after = lookup(api, table_name, [-1, -(2**63), 7])
    expected = twin().initial_rows(np.array([-1, -(2**63), 7])) - np.array([[2.0], [1], [1]])
    np.testing.assert_array_equal(after, expected.astype(np.float32))
    info = api.get(f"/v1/tables/{table_name}").json()
    assert (info["rows"], info["evicted_rows"], info["step"]) == (3, 0, 1)


def test_admission_drops_and_eviction_shows_in_table_info(
    api: httpx.Client, table_name: str
) -> None:
    create_dynamic(api, table_name, capacity=3, admit_after=2, evict="lfu")
    url = f"/v1/tables/{table_name}/gradients"
    first = api.post(url, content=npz_bytes(ids=np.array(WIDE, np.uint64),
                                             grads=np.ones((3, 4), np.float32)), headers=NPZ)
    assert first.json()["dropped_rows"] == 3 and first.json()["pending_rows"] == 0
    rows = []
    for ids in ([-1, -(2**63), 9], [9, 10, 11], [10, 11, 12], [12, 13, 13]):
        reply = api.post(url, json={"ids": ids, "grads": [[1.0] * 4] * 3, "apply": True})
        assert reply.status_code == 200, reply.text
        info = api.get(f"/v1/tables/{table_name}").json()
        rows.append((reply.json()["dropped_rows"], info["rows"], info["evicted_rows"]))
    # -1 and -2**63 admitted at their second push, 9 at its first: dropped; then 9 again,
    # 10 and 11 new; 10, 11 admitted, 12 new; 12 admitted, 13 new (one push)
    assert rows == [(1, 2, 0), (2, 3, 0), (1, 3, 2), (2, 3, 3)]
    keys = np.load(io.BytesIO(api.get(f"/v1/tables/{table_name}/weights").content))["ids"]
    assert keys.tolist() == [10, 11, 12]  # lfu, one update each: the smaller keys left first


def test_weights_are_an_npz_of_ids_and_rows_both_ways(api: httpx.Client, table_name: str) -> None:
    create_dynamic(api, table_name)
    api.post(f"/v1/tables/{table_name}/gradients",
             json={"ids": [3, -4], "grads": [[1.0] * 4] * 2, "apply": True})
    reply = api.get(f"/v1/tables/{table_name}/weights")
    assert (reply.status_code, reply.headers["content-type"]) == (200, "application/x-npz")
    exported = np.load(io.BytesIO(reply.content))
    assert exported["ids"].dtype == np.int64 and exported["ids"].tolist() == [-4, 3]
    np.testing.assert_array_equal(exported["weights"], lookup(api, table_name, [-4, 3]))
    as_json = api.get(f"/v1/tables/{table_name}/weights", headers={"accept": "application/json"})
    assert as_json.json()["ids"] == [-4, 3] and as_json.json()["shape"] == [2, 4]
    api.post(f"/v1/tables/{table_name}/gradients", json={"ids": [3], "grads": [[1.0] * 4]})
    new = np.arange(8, dtype=np.float32).reshape(2, 4)
    put = api.put(f"/v1/tables/{table_name}/weights", headers=NPZ,
                  content=npz_bytes(ids=np.array([2**63 + 1, 3], np.uint64), weights=new))
    assert put.status_code == 200, put.text
    assert put.headers["x-pending-rows-dropped"] == "1"
    assert (put.json()["rows"], put.json()["pending_rows"]) == (3, 0)
    np.testing.assert_array_equal(lookup(api, table_name, [-(2**63) + 1, 3]), new)
    np.testing.assert_array_equal(lookup(api, table_name, [-4]), exported["weights"][:1])


def test_labels_and_neighbours_by_key(api: httpx.Client, table_name: str) -> None:
    create_dynamic(api, table_name)
    ids = [-(2**62), 5, 2**62]
    vectors = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [1, 0.1, 0, 0]], np.float32)
    api.put(f"/v1/tables/{table_name}/weights", headers=NPZ,
            content=npz_bytes(ids=np.array(ids), weights=vectors)).raise_for_status()
    labelled = api.put(f"/v1/tables/{table_name}/labels",
                       json={"ids": [ids[0], ids[2], 99], "labels": ["a", "c", "no row"]})
    assert labelled.json()["labels"] == 3
    found = api.post(f"/v1/tables/{table_name}/neighbors", json={"positive": ["a"], "k": 5})
    assert found.json()["ids"] == [2**62, 5] and found.json()["labels"] == ["c", None]
    assert api.get(f"/v1/tables/{table_name}/projection").json()["ids"] == sorted(ids)


def test_eight_clients_pushing_overlapping_new_keys(live_server: LiveServer,
                                                    table_name: str) -> None:
    """Over a real uvicorn: 8 threads push overlapping keys never seen before (integer
    gradients: exact in any order), some as asynchronous steps; every key gets one row, minus
    the sum of everything pushed for it."""
    with httpx.Client(base_url=live_server.url, timeout=30) as api:
        create_dynamic(api, table_name, capacity=None)
        reply = api.post("/v1/tables", json={"name": f"{table_name}-64", "embedding_dim": 2,
                                             "dtype": "float64", "init": {"kind": "zeros"},
                                             "optimizer": {"kind": "sgd", "lr": 1.0},
                                             "dynamic": {}})
        assert reply.status_code == 201
    name = f"{table_name}-64"
    keys = np.arange(-100, 100, dtype=np.int64) * (2**55 + 3)
    totals: dict[int, np.ndarray] = {}
    lock = threading.Lock()

    def trainer(number: int) -> None:
        rng = np.random.default_rng(number)
        with httpx.Client(base_url=live_server.url, timeout=30) as client:
            for round_number in range(25):
                ids = rng.choice(keys, 32)
                grads = rng.integers(-4, 5, (32, 2)).astype(np.float64)
                query = "?apply=true" if round_number % 4 == 0 else ""
                reply = client.post(f"/v1/tables/{name}/gradients{query}",
                                    content=npy_bytes(ids) + npy_bytes(grads), headers=NPY)
                assert reply.status_code == 200, reply.text
                with lock:
                    for key, grad in zip(ids.tolist(), grads, strict=True):
                        totals[key] = totals.get(key, np.zeros(2)) + grad

    threads = [threading.Thread(target=trainer, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with httpx.Client(base_url=live_server.url, timeout=30) as api:
        api.post(f"/v1/tables/{name}/apply").raise_for_status()
        exported = np.load(io.BytesIO(api.get(f"/v1/tables/{name}/weights").content))
        assert api.get(f"/v1/tables/{name}").json()["rows"] == len(totals)
        for table in (name, table_name):
            api.delete(f"/v1/tables/{table}")
    assert exported["ids"].tolist() == sorted(totals)
    np.testing.assert_array_equal(exported["weights"],
                                  [-totals[key] for key in exported["ids"].tolist()])


def test_kernels_not_ready_yet_make_a_dynamic_table_wait(
    make_app: Callable[..., FastAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without numba's cache the dynamic kernels compile in a thread after start: a request
    that makes a dynamic table meanwhile waits for them (it does not compile them itself)."""
    from service.core.dynamic import warmup

    gate = threading.Event()
    waited: list[bool] = []
    original = warmup.wait

    def slow_wait(timeout: float | None = None) -> bool:
        if timeout is None:  # what DynamicTable() asks: wait to the end
            waited.append(gate.is_set())
            gate.wait(10)
            return original(timeout)
        return False  # what create_app asks at start: not ready yet

    monkeypatch.setattr(warmup, "wait", slow_wait)
    with TestClient(make_app()) as api:
        timer = threading.Timer(0.3, gate.set)
        timer.start()
        reply = api.post("/v1/tables", json={"name": "late", "embedding_dim": 2, "dynamic": {}})
        timer.join()
    assert reply.status_code == 201 and waited == [False]
