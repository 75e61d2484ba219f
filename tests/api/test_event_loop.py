"""What runs on the event loop: nothing that can wait on a lock, and no work larger than
inline_max_bytes. A request that breaks either holds up every other request of the service."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

import service.core.table as table_module
from service.api import codecs
from service.core import warm_up
from service.core.table import EmbeddingTable
from tests.api.helpers import NPY, create


def on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_a_large_create_does_not_hold_up_other_requests(
    make_app: Callable[..., FastAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While 'big' is being allocated and filled, a DELETE of another table, /healthz, the table
    list and a create under the same name are answered (the create's allocation is held until
    they are, so before the fix this test waited on the registry lock on the event loop)."""
    allocating, release = threading.Event(), threading.Event()
    original = table_module.initial_weights

    def held(shape: tuple[int, int], *args: Any) -> np.ndarray:
        if shape[0] == 1000:
            allocating.set()
            assert release.wait(60)
        return original(shape, *args)

    monkeypatch.setattr(table_module, "initial_weights", held)
    replies: dict[str, httpx.Response] = {}
    with TestClient(make_app()) as client:
        create(client, "other")
        big = {"name": "big", "num_embeddings": 1000, "embedding_dim": 4}
        creating = threading.Thread(
            target=lambda: replies.update(create=client.post("/v1/tables", json=big)))
        creating.start()
        assert allocating.wait(60)

        def others() -> None:
            replies["delete"] = client.delete("/v1/tables/other")
            replies["health"] = client.get("/healthz")
            replies["list"] = client.get("/v1/tables")
            replies["again"] = client.post("/v1/tables", json=big)

        meanwhile = threading.Thread(target=others)
        meanwhile.start()
        meanwhile.join(30)
        answered_meanwhile = not meanwhile.is_alive()
        release.set()
        creating.join(60)
        meanwhile.join(60)
        assert answered_meanwhile, "other requests waited for another table's allocation"
        assert replies["delete"].status_code == 204
        assert replies["health"].status_code == 200
        assert replies["list"].json() == {"tables": []}  # 'big' is not there until it is filled
        assert replies["again"].status_code == 409
        assert replies["create"].status_code == 201
        assert [t["name"] for t in client.get("/v1/tables").json()["tables"]] == ["big"]


@pytest.fixture
def where_tables_work(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """(operation, on the event loop?) for every lookup and push a table serves (not the
    throwaway tables create_app warms the core up with: service.core.warm_up)."""
    calls: list[tuple[str, bool]] = []
    for operation in ("lookup", "push"):
        original = getattr(EmbeddingTable, operation)

        def recording(self: EmbeddingTable, *args: Any, _name: str = operation,
                      _original: Any = original, **kwargs: Any) -> Any:
            if self.name != warm_up.TABLE:
                calls.append((_name, on_event_loop()))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(EmbeddingTable, operation, recording)
    return calls


@pytest.mark.parametrize("fast_path", [True, False])
def test_wide_requests_run_in_the_thread_pool(
    make_app: Callable[..., FastAPI], where_tables_work: list[tuple[str, bool]], fast_path: bool
) -> None:
    """Default settings: 512 ids x dim 4096 float32 is 8 MiB of rows, few ids but too much work
    for the event loop; 2 ids of the same table (32 KiB) are served on it."""
    with TestClient(make_app(binary_fast_path=fast_path)) as client:
        create(client, "wide", num_embeddings=600, embedding_dim=4096, init={"kind": "zeros"})
        for count in (512, 2):
            ids = np.arange(count)
            pair = codecs.to_npy(ids) + codecs.to_npy(np.ones((count, 4096), np.float32))
            assert client.post("/v1/tables/wide/gradients", content=pair,
                               headers=NPY).status_code == 200
            reply = client.post("/v1/tables/wide/lookup", content=codecs.to_npy(ids), headers=NPY)
            assert reply.status_code == 200
    assert where_tables_work == [("push", False), ("lookup", False),
                                 ("push", True), ("lookup", True)]


def test_inline_max_bytes_zero_sends_everything_to_the_thread_pool(
    make_app: Callable[..., FastAPI], where_tables_work: list[tuple[str, bool]]
) -> None:
    with TestClient(make_app(inline_max_bytes=0)) as client:
        create(client, "t")
        client.post("/v1/tables/t/lookup", content=codecs.to_npy(np.arange(2)), headers=NPY)
    assert where_tables_work == [("lookup", False)]
