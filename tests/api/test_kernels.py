"""The service on each kernel backend (EMBED_KERNELS): overflowing updates refused alike, and no
request ever compiling a kernel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from service.core import kernels
from tests.api.helpers import NPY, create, fingerprint, npy_bytes

OPTIMIZERS = ["sgd", "momentum", "adagrad", "adam"]


@pytest.mark.parametrize("backend", kernels.BACKENDS)
@pytest.mark.parametrize("how", ["apply", "json push apply=true", "npy push apply=true"])
def test_an_update_that_would_overflow_is_a_422_that_changes_nothing(
    make_app: Callable[..., FastAPI], backend: str, how: str
) -> None:
    """issue 17: apply lr=1e10 over a pending 1e30 on float32 left inf in the weights. Now a 422
    naming the table, the row and the array, the same on both backends, and every table as it
    was (weights, step, pending rows)."""
    with TestClient(make_app(kernels=backend)) as api:
        assert kernels.selected() == backend
        create(api, "words", optimizer={"kind": "sgd", "lr": 1e10})
        pushed = api.post("/v1/tables/words/gradients", json={"ids": [7], "grads": [[1e30] * 4]})
        assert pushed.status_code == 200, pushed.text
        before = fingerprint(api)
        if how == "apply":
            reply = api.post("/v1/tables/words/apply", json={})
        elif how == "json push apply=true":
            reply = api.post("/v1/tables/words/gradients",
                             json={"ids": [3, 7], "grads": [[0.0] * 4, [1e30] * 4], "apply": True})
        else:
            ids, grads = np.array([3, 7]), np.array([[0.0] * 4, [1e30] * 4], np.float32)
            reply = api.post("/v1/tables/words/gradients?apply=true", headers=NPY,
                             content=npy_bytes(ids) + npy_bytes(grads))
        assert reply.status_code == 422, reply.text
        assert reply.json() == {"detail": (
            "update of table 'words' refused: the new weights of row 7 would not be finite in "
            "float32 (lr=10000000000.0, optimizer sgd); nothing was changed")}
        assert fingerprint(api) == before


def test_no_request_compiles_a_kernel(make_app: Callable[..., FastAPI]) -> None:
    """After start-up (create_app chose numba), every kind of numeric request, on every optimizer
    and dtype, runs kernels compiled before: numba reports no compilation."""
    from numba.core import event

    with TestClient(make_app(kernels="numba")) as api, \
            event.install_recorder("numba:compile") as compiled:
        for kind in OPTIMIZERS:
            for dtype in ("float32", "float64"):
                name = f"{kind}-{dtype}"
                create(api, name, dtype=dtype, optimizer={"kind": kind})
                ids, grads = np.array([1, 4, 1]), np.ones((3, 4), dtype)
                requests: list[dict[str, Any]] = [
                    {"json": {"ids": [1, 2, 2], "grads": [[0.5] * 4] * 3}},
                    {"json": {"ids": [[3, 3]], "grads": [[[0.5] * 4] * 2], "apply": True}},
                    {"content": npy_bytes(ids) + npy_bytes(grads), "headers": NPY},
                    {"content": npy_bytes(ids.astype(np.int32))  # other id dtype, Fortran grads
                     + npy_bytes(np.asfortranarray(grads)), "headers": NPY,
                     "params": {"apply": "true"}},
                ]
                for request in requests:
                    reply = api.post(f"/v1/tables/{name}/gradients", **request)
                    assert reply.status_code == 200, reply.text
                assert api.post(f"/v1/tables/{name}/apply", json={"average": True}).status_code \
                    == 200
                reply = api.post(f"/v1/tables/{name}/lookup", content=npy_bytes(ids),
                                 headers=NPY)
                assert reply.status_code == 200
    assert compiled.buffer == []


def test_no_request_on_a_dynamic_table_compiles_a_kernel(
    make_app: Callable[..., FastAPI],
) -> None:
    """The dynamic tables' kernels compile in a thread at start (service.core.dynamic.warmup);
    once it is done, no request of any kind on a dynamic table (every optimizer and dtype,
    admission, eviction, ttl; int64, uint64, int32 and JSON ids; lookups, pushes, applies,
    weights, labels, neighbours, the projection, a snapshot) compiles anything, nor meets a
    kernel with argument types it was not readied for (a new signature: loaded from numba's
    cache if it is there, compiled if not)."""
    from numba.core import event

    from service.core.dynamic import warmup

    with TestClient(make_app(kernels="numba")) as api:
        assert warmup.wait(120)
        readied = dynamic_signatures()
        with event.install_recorder("numba:compile") as compiled:
            for number, settings in enumerate(({}, {"capacity": 3, "admit_after": 2,
                                                    "evict": "lfu", "ttl_steps": 2},
                                               {"capacity": 2, "ttl_steps": 1})):
                for kind in OPTIMIZERS:
                    for dtype in ("float32", "float64"):
                        name = f"{kind}-{dtype}-{number}"
                        reply = api.post("/v1/tables", json={
                            "name": name, "embedding_dim": 4, "dtype": dtype,
                            "optimizer": {"kind": kind}, "dynamic": settings})
                        assert reply.status_code == 201, reply.text
                        exercise_dynamic_table(api, name, dtype)
            assert api.post("/v1/snapshots").status_code == 200
    assert compiled.buffer == []
    assert dynamic_signatures() == readied


def dynamic_signatures() -> dict[str, set[Any]]:
    """The signatures each numba kernel of service.core.dynamic is compiled (or loaded) for."""
    import importlib
    import pkgutil

    import service.core.dynamic as package

    found: dict[str, set[Any]] = {}
    for module_info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{module_info.name}")
        for name, value in vars(module).items():
            if hasattr(value, "overloads") and hasattr(value, "py_func"):
                found[f"{module_info.name}.{name}"] = set(value.signatures)
    assert len(found) >= 10  # the key index, initial rows and eviction kernels
    return found


def exercise_dynamic_table(api: TestClient, name: str, dtype: str) -> None:
    path = f"/v1/tables/{name}"
    wide = np.array([2**63 + 7, 5, 2**64 - 1], np.uint64)
    grads = np.ones((3, 4), dtype)
    requests: list[dict[str, Any]] = [
        {"json": {"ids": [-1, 2**63, 5], "grads": [[0.5] * 4] * 3}},
        {"json": {"ids": [[3, 3]], "grads": [[[0.5] * 4] * 2], "apply": True}},
        {"content": npy_bytes(wide) + npy_bytes(grads), "headers": NPY},
        {"content": npy_bytes(np.array([9, -9, 9], np.int32))
         + npy_bytes(np.asfortranarray(grads)), "headers": NPY, "params": {"apply": "true"}},
    ]
    for _ in range(2):
        for request in requests:
            reply = api.post(f"{path}/gradients", **request)
            assert reply.status_code == 200, reply.text
        assert api.post(f"{path}/apply", json={"average": True}).status_code == 200
    for body in ({"content": npy_bytes(wide), "headers": NPY},
                 {"content": npy_bytes(np.array([[5, -1]])), "headers": NPY},
                 {"json": {"ids": [-1, 2**64 - 1, 12]}}):
        assert api.post(f"{path}/lookup", **body).status_code == 200
    weights = api.get(f"{path}/weights")
    assert weights.status_code == 200
    assert api.put(f"{path}/weights", content=weights.content,
                   headers={"content-type": "application/x-npz"}).status_code == 200
    assert api.put(f"{path}/labels", json={"ids": [5], "labels": ["five"]}).status_code == 200
    assert api.get(f"{path}/projection").status_code == 200
    assert api.post(f"{path}/neighbors", json={"positive": [[1.0] * 4]}).status_code == 200
