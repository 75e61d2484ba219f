"""Limits: body size (declared or chunked), ids per request, table count, memory budget, and the
decompressed size of an .npz (a real zip bomb)."""

from __future__ import annotations

import io
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from service import npy
from service.api import codecs
from service.core.errors import InvalidRequest
from tests.conftest import LiveServer


def table(name: str = "words", rows: int = 10, dim: int = 4, **extra: object) -> dict:
    return {"name": name, "num_embeddings": rows, "embedding_dim": dim, "init": {"kind": "zeros"},
            **extra}


@pytest.fixture
def small(make_app: Callable[..., FastAPI]) -> Iterator[TestClient]:
    """max_body_bytes=1000, max_ids_per_request=8."""
    with TestClient(make_app(max_body_bytes=1000, max_ids_per_request=8)) as client:
        client.post("/v1/tables", json=table()).raise_for_status()
        yield client


def chunks(total: int, size: int = 100) -> Iterator[bytes]:
    for start in range(0, total, size):
        yield b" " * min(size, total - start)


# -- body size -------------------------------------------------------------------------------
def test_declared_length_over_the_limit_is_refused_unread(small: TestClient) -> None:
    reply = small.post("/v1/tables/words/lookup", content=b"[" * 1001)
    assert reply.status_code == 413
    assert reply.json()["detail"] == "Content-Length 1001 exceeds max_body_bytes=1000"


def test_a_body_at_the_limit_is_read(small: TestClient) -> None:
    body = b'{"ids": [1]}'
    reply = small.post("/v1/tables/words/lookup", content=body + b" " * (1000 - len(body)))
    assert reply.status_code == 200
    assert reply.json()["vectors"] == [[0.0] * 4]


@pytest.mark.parametrize("path", ["/v1/tables/words/lookup", "/v1/tables/words/gradients",
                                  "/v1/tables/words/apply", "/v1/tables"])
def test_chunked_body_over_the_limit_is_refused(small: TestClient, path: str) -> None:
    """No Content-Length: the limit holds while reading (FastAPI's own body parsing included)."""
    reply = small.post(path, content=chunks(5000))
    assert reply.status_code == 413
    assert reply.json()["detail"] == "body exceeds max_body_bytes=1000"
    assert small.get("/v1/tables").json()["tables"][0]["name"] == "words"


@pytest.mark.e2e
def test_chunked_body_over_the_limit_over_http() -> None:
    server = LiveServer(env={"EMBED_MAX_BODY_BYTES": "1000"}).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            client.post("/v1/tables", json=table()).raise_for_status()
            for path in ("/v1/tables/words/gradients", "/v1/tables"):
                reply = client.post(path, content=chunks(200_000, 1000),
                                    headers={"Content-Type": "application/json"})
                assert reply.status_code == 413, path
                assert reply.json()["detail"] == "body exceeds max_body_bytes=1000"
            assert client.get("/v1/tables/words").json()["pending_rows"] == 0
    finally:
        server.stop()


# -- ids per request -------------------------------------------------------------------------
def test_ids_per_request(small: TestClient) -> None:
    assert small.post("/v1/tables/words/lookup", json={"ids": [1] * 8}).status_code == 200
    over = small.post("/v1/tables/words/lookup", json={"ids": [[1] * 3] * 3})
    assert over.status_code == 413
    assert over.json()["detail"] == "ids has 9 entries, more than max_ids_per_request=8"
    npy = small.post("/v1/tables/words/lookup", content=codecs.to_npy(np.zeros(9, np.int64)),
                     headers={"Content-Type": codecs.NPY})
    assert npy.status_code == 413
    push = small.post("/v1/tables/words/gradients", json={"ids": [1] * 9, "grads": [[0] * 4] * 9})
    assert push.status_code == 413
    assert small.get("/v1/tables/words").json()["pending_rows"] == 0


# -- table count and memory budget -----------------------------------------------------------
def test_max_tables(make_app: Callable[..., FastAPI]) -> None:
    with TestClient(make_app(max_tables=2)) as client:
        assert client.post("/v1/tables", json=table("a")).status_code == 201
        assert client.post("/v1/tables", json=table("b")).status_code == 201
        third = client.post("/v1/tables", json=table("c"))
        assert third.status_code == 413
        assert "max_tables=2" in third.json()["detail"]
        client.delete("/v1/tables/a")
        assert client.post("/v1/tables", json=table("c")).status_code == 201


def test_memory_budget(make_app: Callable[..., FastAPI]) -> None:
    with TestClient(make_app(memory_budget_bytes=10_000)) as client:
        # sgd float32: 100 x 20 x 4 = 8000 bytes fit; another 8000 do not
        assert client.post("/v1/tables", json=table("a", 100, 20)).status_code == 201
        over = client.post("/v1/tables", json=table("b", 100, 20))
        assert over.status_code == 413
        assert "needs 8000 bytes" in over.json()["detail"]
        assert "memory budget of 10000 bytes" in over.json()["detail"]
        # adam keeps two more arrays of the same size: 3 x 2000 bytes = 6000 > 2000 left
        adam = client.post("/v1/tables", json=table("c", 50, 10, optimizer={"kind": "adam"}))
        assert adam.status_code == 413
        assert client.post("/v1/tables", json=table("d", 50, 10)).status_code == 201
        assert [t["name"] for t in client.get("/v1/tables").json()["tables"]] == ["a", "d"]


def test_absurd_sizes_are_refused_before_allocating(make_app: Callable[..., FastAPI]) -> None:
    with TestClient(make_app(memory_budget_bytes=10**9)) as client:
        reply = client.post("/v1/tables", json=table("huge", 10**15, 10**6))
        assert reply.status_code == 413
        assert "memory budget" in reply.json()["detail"]


# -- zip bomb --------------------------------------------------------------------------------
def zip_bomb(unpacked_bytes: int) -> bytes:
    """An .npz whose grads.npy inflates to unpacked_bytes (a valid .npy header, then zeros)."""
    count = unpacked_bytes // 4
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("ids.npy", codecs.to_npy(np.zeros(count // 4, dtype=np.int64)))
        with archive.open("grads.npy", "w", force_zip64=True) as member:
            member.write(npy.header(np.dtype(np.float32), (count // 4, 4)))
            zeros = bytes(2**20)
            for _ in range(unpacked_bytes // len(zeros)):
                member.write(zeros)
    return stream.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return zip_bomb(64 * 2**20)  # 64 MiB inflated, under 0.1 MiB packed


def test_zip_bomb_stops_at_the_limit_in_memory(bomb: bytes) -> None:
    assert len(bomb) < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(InvalidRequest, match=r"unpacks to more than 4194304 bytes"):
            codecs.parse_npz(bomb, ("ids", "grads"), 4 * 2**20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 * 2**20  # bounded by the limit, nowhere near the 64 MiB inflated


def test_zip_bomb_over_http(make_app: Callable[..., FastAPI], bomb: bytes) -> None:
    with TestClient(make_app(max_body_bytes=4 * 2**20)) as client:
        client.post("/v1/tables", json=table()).raise_for_status()
        reply = client.post("/v1/tables/words/gradients", content=bomb,
                            headers={"Content-Type": codecs.NPZ})
        assert reply.status_code == 422
        assert "unpacks to more than 4194304 bytes" in reply.json()["detail"]
        assert client.get("/v1/tables/words").json()["pending_rows"] == 0


# -- bytes of rows one request makes the service hold (max_rows_bytes) -----------------------
NPY_TYPE = {"Content-Type": codecs.NPY}


def test_a_lookup_asking_for_128_gib_is_a_413_not_a_500(make_app: Callable[..., FastAPI]) -> None:
    """The reported request, default settings: a 32 MiB .npy of 4,194,304 ids against a
    10 x 4096 float64 table asks for a 128 GiB reply."""
    with TestClient(make_app()) as client:
        client.post("/v1/tables", json=table("wide", 10, 4096, dtype="float64")).raise_for_status()
        ids = codecs.to_npy(np.zeros(4 * 2**20, dtype=np.int64))
        reply = client.post("/v1/tables/wide/lookup", content=ids, headers=NPY_TYPE)
        assert reply.status_code == 413
        assert reply.json()["detail"] == (
            "a lookup of 4194304 ids x embedding_dim 4096 x 8 bytes (float64) is 137438953472 "
            "bytes of rows, more than max_rows_bytes=268435456"
        )
        assert reply.headers["x-error-code"] == "payload_too_large"
        assert client.get("/healthz").status_code == 200


def test_the_reply_limit_is_checked_before_anything_is_allocated(
    make_app: Callable[..., FastAPI],
) -> None:
    with TestClient(make_app(max_rows_bytes=2**20)) as client:
        client.post("/v1/tables", json=table("t", 10, 64)).raise_for_status()
        fits = codecs.to_npy(np.zeros(4096, dtype=np.int64))  # 4096 x 64 x 4 = 1 MiB: at the limit
        assert client.post("/v1/tables/t/lookup", content=fits, headers=NPY_TYPE).status_code == 200
        over = codecs.to_npy(np.zeros(64 * 4096, dtype=np.int64))  # a 64 MiB reply
        tracemalloc.start()
        try:
            reply = client.post("/v1/tables/t/lookup", content=over, headers=NPY_TYPE)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert reply.status_code == 413
        assert "more than max_rows_bytes=1048576" in reply.json()["detail"]
        assert peak < 8 * 2**20  # the request's own 2 MiB body and change, not the reply


def test_a_json_reply_counts_its_encoded_size(make_app: Callable[..., FastAPI]) -> None:
    """1024 ids x 64 float64: 512 KiB as .npy (under a 1 MiB limit), up to 1.6 MB as JSON text
    (25 characters a number at most): .npy is served, JSON refused."""
    with TestClient(make_app(max_rows_bytes=2**20)) as client:
        client.post("/v1/tables", json=table("t", 10, 64, dtype="float64")).raise_for_status()
        ids = [0] * 1024
        npy = client.post("/v1/tables/t/lookup", content=codecs.to_npy(np.array(ids)),
                          headers=NPY_TYPE)
        assert npy.status_code == 200
        as_json = client.post("/v1/tables/t/lookup", json={"ids": ids})
        assert as_json.status_code == 413
        assert as_json.json()["detail"] == (
            "a JSON reply of 1024 ids x embedding_dim 64 float64 may take 1641581 bytes, more "
            "than max_rows_bytes=1048576; ask for Accept: application/x-npy (8 bytes a number)"
        )
        npy_accept = client.post("/v1/tables/t/lookup", json={"ids": ids},
                                 headers={"Accept": codecs.NPY})
        assert npy_accept.status_code == 200


def test_the_json_estimate_is_an_upper_bound() -> None:
    """The longest numbers each dtype can print, encoded as the service encodes replies."""
    from service.api.handlers import json_reply_bytes

    for dtype in (np.float32, np.float64):
        info = np.finfo(dtype)
        longest = np.array([-info.max, -info.smallest_normal, -info.smallest_subnormal,
                            -np.nextafter(dtype(1), dtype(0)), -dtype(1) / 3], dtype=dtype)
        rows = np.resize(longest, (7, 5, 9)).astype(dtype)  # (ids..., dim)
        body = codecs.dumps({"shape": list(rows.shape), "step": 2**62, "vectors": rows})
        assert len(body) <= json_reply_bytes(rows.shape[:-1], 9, np.dtype(dtype))


def test_a_wide_push_is_refused_before_its_gradient_is_widened(
    make_app: Callable[..., FastAPI],
) -> None:
    """int8 gradients into a float64 table: a 256 KiB body is 2 MiB of float64 rows."""
    with TestClient(make_app(max_rows_bytes=2**20)) as client:
        client.post("/v1/tables", json=table("t", 10, 64, dtype="float64")).raise_for_status()
        ids, grads = np.zeros(4096, dtype=np.int64), np.ones((4096, 64), dtype=np.int8)
        pair = codecs.to_npy(ids) + codecs.to_npy(grads)
        reply = client.post("/v1/tables/t/gradients", content=pair, headers=NPY_TYPE)
        assert reply.status_code == 413
        assert reply.json()["detail"] == (
            "a push of 4096 ids x embedding_dim 64 x 8 bytes (float64) is 2097152 bytes of "
            "rows, more than max_rows_bytes=1048576"
        )
        body = {"ids": ids.tolist(), "grads": grads.tolist()}
        assert client.post("/v1/tables/t/gradients", json=body).status_code == 413
        assert client.get("/v1/tables/t").json()["pending_rows"] == 0
