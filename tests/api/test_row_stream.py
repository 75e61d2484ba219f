"""Long lookups sent while their rows are read (service.api.row_stream): the same bytes as a
reply sent whole, through the fast path and the FastAPI route, in-process and from a real
uvicorn; errors found before a row is read are the usual replies; and every row of a streamed
reply is read at the step it carries, however many pushes land meanwhile."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from service.core import gather
from tests.api.helpers import NPY, create, load_npy, npy_bytes
from tests.conftest import LiveServer

DIM = 6


def lookup(client: httpx.Client, name: str, ids: np.ndarray, **headers: str) -> httpx.Response:
    return client.post(f"/v1/tables/{name}/lookup", content=npy_bytes(ids),
                       headers={**NPY, **headers})


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "route"])
def test_streamed_reply_is_the_whole_reply(
    make_app: Callable[..., FastAPI], monkeypatch: pytest.MonkeyPatch, fast_path: bool
) -> None:
    """inline_max_bytes=0 streams every binary lookup; blocks of 5 rows make many pieces."""
    monkeypatch.setattr(gather, "BLOCK_BYTES", 5 * DIM * 4)
    ids = np.random.default_rng(3).integers(0, 40, (4, 23))  # (4, 23): 92 rows, 19 blocks
    replies = {}
    for streamed in (True, False):
        settings = {"inline_max_bytes": 0} if streamed else {}
        with TestClient(make_app(binary_fast_path=fast_path, **settings)) as client:
            create(client, "words", num_embeddings=40, embedding_dim=DIM, seed=5)
            client.post("/v1/tables/words/gradients?apply=true", json={
                "ids": [1, 2], "grads": np.ones((2, DIM)).tolist()})  # step 1
            weights = load_npy(lookup(client, "words", np.arange(40)).content)
            replies[streamed] = lookup(client, "words", ids)
            errors = [lookup(client, "words", np.array([3, 40])).json(),
                      lookup(client, "nothing", ids).status_code]
            assert errors == [{"detail": errors[0]["detail"]}, 404]
            assert "40" in errors[0]["detail"]
    streamed_reply, whole = replies[True], replies[False]
    assert streamed_reply.status_code == whole.status_code == 200
    assert streamed_reply.headers.raw == whole.headers.raw  # x-table-step 1, same order
    assert streamed_reply.content == whole.content
    np.testing.assert_array_equal(load_npy(streamed_reply.content), weights[ids])


def test_streamed_reply_from_uvicorn() -> None:
    """A real server, default blocks (1 MiB): a 3 MiB reply in pieces, read by httpx."""
    with LiveServer(env={"EMBED_INLINE_MAX_BYTES": "0"}) as server, httpx.Client(
            base_url=server.url, timeout=30) as client:
        create(client, "big", num_embeddings=5000, embedding_dim=64, seed=1)
        ids = np.random.default_rng(4).integers(0, 5000, 12_000)  # (12000,): 2.9 MiB of rows
        weights = load_npy(client.get("/v1/tables/big/weights",
                                      headers={"Accept": "application/x-npy"}).content)
        reply = lookup(client, "big", ids)
        assert reply.headers["x-table-step"] == "0"
        assert int(reply.headers["content-length"]) == len(reply.content)
        np.testing.assert_array_equal(load_npy(reply.content), weights[ids])
        assert lookup(client, "big", np.array([5000])).status_code == 422


def test_every_streamed_row_is_read_at_the_reply_s_step(
    make_app: Callable[..., FastAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each push adds 1 to every row (SGD, lr 1, gradient -1) and moves the step by one, so a
    row read at step s holds s everywhere. Lookups of every row, one row a block, while another
    thread pushes: each reply's rows all hold the step its header says."""
    monkeypatch.setattr(gather, "BLOCK_BYTES", DIM * 4)
    rows = 300
    with TestClient(make_app(inline_max_bytes=0)) as client:
        create(client, "steps", num_embeddings=rows, embedding_dim=DIM, init={"kind": "zeros"},
               optimizer={"kind": "sgd", "lr": 1.0})
        push = {"ids": list(range(rows)), "grads": (-np.ones((rows, DIM))).tolist()}
        stop = threading.Event()

        def pushing() -> None:
            while not stop.is_set():
                assert client.post("/v1/tables/steps/gradients?apply=true",
                                   json={**push, "apply": True}).status_code == 200

        pusher = threading.Thread(target=pushing)
        pusher.start()
        try:
            steps = []
            for _ in range(30):
                reply = lookup(client, "steps", np.arange(rows))
                step = int(reply.headers["x-table-step"])
                np.testing.assert_array_equal(load_npy(reply.content),
                                              np.full((rows, DIM), step, np.float32))
                steps.append(step)
        finally:
            stop.set()
            pusher.join()
    assert steps == sorted(steps) and steps[-1] > steps[0]  # pushes did land meanwhile
