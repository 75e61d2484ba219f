"""Idempotency keys (service/api/middleware/idempotency.py): a repeat gets the first reply, even
while the first is still running; 5xx and exceptions are forgotten; memory is bounded in count
and age."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from service.api.middleware.idempotency import (
    MAX_REMEMBERED_BODY_BYTES,
    Idempotency,
    ReplyStore,
    RequestFingerprint,
)
from service.api.middleware.stack import ServiceMiddleware
from tests.api.helpers import NPZ, create, npz_bytes


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class CountingApp:
    """An ASGI app that counts its calls and answers with `status` and the call number; with a
    gate, each call waits for it to open first."""

    def __init__(self, status: int = 200, body_size: int = 0) -> None:
        self.calls = 0
        self.status = status
        self.body_size = body_size
        self.gate: anyio.Event | None = None
        self.fail_first = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        number = self.calls
        while (await receive()).get("more_body"):
            pass
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_first and number == 1:
            raise RuntimeError("boom")
        body = f"call {number}".encode().ljust(self.body_size or 0, b".")
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(b"content-length", str(len(body)).encode()),
                                (b"x-call", str(number).encode())]})
        await send({"type": "http.response.body", "body": body})


def client_of(app: Any, **settings: Any) -> httpx.AsyncClient:
    store = ReplyStore(max_keys=settings.get("max_keys", 100),
                       ttl_seconds=settings.get("ttl_seconds", 60),
                       max_bytes=settings.get("max_bytes", 2**20))
    wrapped = Idempotency(app, store=store)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=wrapped, raise_app_exceptions=False),
                             base_url="http://testserver")


KEY = {"Idempotency-Key": "key-1"}


@pytest.mark.anyio
async def test_repeat_gets_the_first_reply() -> None:
    app = CountingApp()
    async with client_of(app) as client:
        first = await client.post("/v1/tables/a/gradients", content=b"abc", headers=KEY)
        second = await client.post("/v1/tables/a/gradients", content=b"abc", headers=KEY)
    assert app.calls == 1
    assert (first.status_code, first.content, first.headers["x-call"]) == (200, b"call 1", "1")
    assert (second.status_code, second.content, second.headers["x-call"]) == (200, b"call 1", "1")
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"


@pytest.mark.anyio
async def test_without_a_key_or_on_get_every_request_runs() -> None:
    app = CountingApp()
    async with client_of(app) as client:
        await client.post("/v1/tables/a/apply")
        await client.post("/v1/tables/a/apply")
        await client.get("/v1/tables/a", headers=KEY)
        await client.get("/v1/tables/a", headers=KEY)
    assert app.calls == 4


@pytest.mark.anyio
async def test_keys_are_scoped_by_method_path_and_authorization() -> None:
    app = CountingApp()
    async with client_of(app) as client:
        await client.post("/v1/tables/a/apply", headers=KEY)
        await client.post("/v1/tables/b/apply", headers=KEY)
        await client.put("/v1/tables/a/apply", headers=KEY)
        await client.post("/v1/tables/a/apply", headers={**KEY, "Authorization": "Bearer x"})
        replay = await client.post("/v1/tables/a/apply", headers=KEY)
    assert app.calls == 4
    assert replay.content == b"call 1"


@pytest.mark.anyio
async def test_a_key_reused_for_another_request_is_refused() -> None:
    app = CountingApp()
    async with client_of(app) as client:
        await client.post("/v1/tables/a/gradients", content=b"abc", headers=KEY)
        other_body = await client.post("/v1/tables/a/gradients", content=b"abcd", headers=KEY)
        other_query = await client.post("/v1/tables/a/gradients?apply=true", content=b"abc",
                                        headers=KEY)
    assert app.calls == 1
    for reply in (other_body, other_query):
        assert reply.status_code == 422
        assert reply.headers["x-error-code"] == "idempotency_key_reused"
        assert reply.json()["detail"] == (
            "Idempotency-Key 'key-1' was already used for another POST /v1/tables/a/gradients "
            "request (a different body, query or Content-Type); use a new key for each request"
        )


@pytest.mark.anyio
async def test_another_body_of_the_same_length_is_another_request() -> None:
    """The reported case: same key, {"ids":[1],...} then {"ids":[2],...}."""
    app = CountingApp()
    async with client_of(app) as client:
        first = await client.post("/v1/tables/a/gradients", headers=KEY,
                                  json={"ids": [1], "grads": [[1.0]]})
        second = await client.post("/v1/tables/a/gradients", headers=KEY,
                                   json={"ids": [2], "grads": [[1.0]]})
        same = await client.post("/v1/tables/a/gradients", headers=KEY,
                                 json={"ids": [1], "grads": [[1.0]]})
    assert app.calls == 1
    assert first.status_code == 200
    assert second.status_code == 422
    assert second.headers["x-error-code"] == "idempotency_key_reused"
    assert same.headers["idempotent-replayed"] == "true"


def chunked(*pieces: bytes) -> Any:
    async def stream() -> Any:
        for piece in pieces:
            yield piece

    return stream()


class ChunkCountingApp(CountingApp):
    """Counts the body messages it receives: a first attempt's body is streamed to it."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counting() -> Any:
            message = await receive()
            self.messages.append(len(message.get("body", b"")))
            return message

        await super().__call__(scope, counting, send)


@pytest.mark.anyio
async def test_chunked_bodies_are_told_apart_by_content() -> None:
    """Without Content-Length, bodies of other sizes (or the same size) are other requests;
    the same bytes, chunked otherwise, are the same request."""
    app = ChunkCountingApp()
    async with client_of(app) as client:
        first = await client.post("/v1/tables/a/gradients", headers=KEY,
                                  content=chunked(b"abc", b"def", b"g"))
        longer = await client.post("/v1/tables/a/gradients", headers=KEY,
                                   content=chunked(b"abc", b"defgh"))
        same_size = await client.post("/v1/tables/a/gradients", headers=KEY,
                                      content=chunked(b"abc", b"deF", b"g"))
        same = await client.post("/v1/tables/a/gradients", headers=KEY,
                                 content=chunked(b"ab", b"cdefg"))
    assert app.calls == 1
    assert app.messages[:3] == [3, 3, 1]  # the first attempt's body reached the app as sent
    assert first.status_code == 200
    assert (longer.status_code, same_size.status_code) == (422, 422)
    assert same.headers["idempotent-replayed"] == "true"


class Refusing:
    """Answers 404 without reading its body (as a route does for a missing table)."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"no"})


@pytest.mark.anyio
async def test_a_reply_sent_before_the_body_was_read_still_knows_the_body() -> None:
    app = Refusing()
    async with client_of(app) as client:
        await client.post("/v1/tables/a/gradients", headers=KEY, content=b"x" * 100_000)
        same = await client.post("/v1/tables/a/gradients", headers=KEY, content=b"x" * 100_000)
        other = await client.post("/v1/tables/a/gradients", headers=KEY, content=b"y" * 100_000)
    assert app.calls == 1
    assert same.headers["idempotent-replayed"] == "true"
    assert other.status_code == 422


@pytest.mark.anyio
@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there"])
async def test_malformed_keys_are_refused(key: str) -> None:
    app = CountingApp()
    async with client_of(app) as client:
        reply = await client.post("/v1/tables/a/apply",
                                  headers=[("Idempotency-Key", key.encode("latin-1"))])
    assert app.calls == 0
    assert reply.status_code == 422 and reply.headers["x-error-code"] == "invalid_idempotency_key"
    assert reply.json()["detail"].startswith("Idempotency-Key must be 1-255 printable ASCII")


@pytest.mark.anyio
async def test_a_repeat_waits_for_the_first_in_flight() -> None:
    app = CountingApp()
    app.gate = anyio.Event()
    replies: list[httpx.Response] = []
    async with client_of(app) as client:

        async def post() -> None:
            replies.append(await client.post("/v1/tables/a/apply", headers=KEY))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(post)
            tasks.start_soon(post)
            tasks.start_soon(post)
            while app.calls == 0:
                await anyio.sleep(0.001)
            await anyio.sleep(0.05)  # the repeats have arrived and wait
            assert app.calls == 1 and replies == []
            app.gate.set()
    assert app.calls == 1
    assert sorted(reply.headers.get("idempotent-replayed", "") for reply in replies) == [
        "", "true", "true"]
    assert {reply.content for reply in replies} == {b"call 1"}


@pytest.mark.anyio
@pytest.mark.parametrize(("status", "remembered"),
                         [(201, True), (404, True), (409, True), (422, True), (401, False),
                          (429, False), (500, False), (503, False)])
async def test_which_statuses_are_remembered(status: int, remembered: bool) -> None:
    app = CountingApp(status=status)
    async with client_of(app) as client:
        await client.post("/v1/tables/a/apply", headers=KEY)
        second = await client.post("/v1/tables/a/apply", headers=KEY)
    assert app.calls == (1 if remembered else 2)
    assert second.status_code == status
    assert ("idempotent-replayed" in second.headers) is remembered


@pytest.mark.anyio
async def test_an_exception_is_forgotten_and_a_waiting_repeat_runs() -> None:
    app = CountingApp()
    app.gate = anyio.Event()
    app.fail_first = True
    replies: list[httpx.Response] = []
    async with client_of(app) as client:

        async def post() -> None:
            replies.append(await client.post("/v1/tables/a/apply", headers=KEY))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(post)
            while app.calls == 0:
                await anyio.sleep(0.001)
            tasks.start_soon(post)
            await anyio.sleep(0.05)  # the repeat waits for the first...
            assert app.calls == 1
            app.gate.set()  # ...which fails; then the repeat runs, and succeeds
    assert app.calls == 2
    assert sorted(reply.status_code for reply in replies) == [200, 500]


@pytest.mark.anyio
async def test_large_replies_are_not_remembered() -> None:
    app = CountingApp(body_size=MAX_REMEMBERED_BODY_BYTES + 1)
    async with client_of(app) as client:
        await client.post("/v1/tables/a/apply", headers=KEY)
        second = await client.post("/v1/tables/a/apply", headers=KEY)
    assert app.calls == 2 and "idempotent-replayed" not in second.headers


@pytest.mark.anyio
async def test_max_keys_zero_turns_keys_off() -> None:
    app = CountingApp()
    async with client_of(app, max_keys=0) as client:
        await client.post("/v1/tables/a/apply", headers=KEY)
        await client.post("/v1/tables/a/apply", headers=KEY)
    assert app.calls == 2


def test_store_forgets_the_oldest_beyond_max_keys() -> None:
    store = ReplyStore(max_keys=2, ttl_seconds=60, max_bytes=2**20, clock=lambda: 0.0)
    keys = [("POST", "/p", f"k{i}", "") for i in range(3)]
    for number, key in enumerate(keys):
        store.put(key, b"", 200, [], f"{number}".encode())
    assert len(store) == 2
    assert store.get(keys[0]) is None
    assert [store.get(key).body for key in keys[1:]] == [b"1", b"2"]  # type: ignore[union-attr]


def test_store_forgets_after_the_ttl() -> None:
    now = [0.0]
    store = ReplyStore(max_keys=10, ttl_seconds=5, max_bytes=2**20, clock=lambda: now[0])
    old, new = ("POST", "/p", "old", ""), ("POST", "/p", "new", "")
    store.put(old, b"", 200, [], b"old")
    now[0] = 3.0
    store.put(new, b"", 200, [], b"new")
    now[0] = 5.5
    assert store.get(old) is None and store.get(new) is not None
    now[0] = 8.0
    store.put(("POST", "/p", "newest", ""), b"", 200, [], b"x")
    assert len(store) == 1  # both expired ones dropped when the newest came


# -- the real app --------------------------------------------------------------------------
def test_push_with_a_key_counts_once(api: httpx.Client, table_name: str) -> None:
    create(api, table_name, num_embeddings=4, embedding_dim=2, init={"kind": "zeros"},
           optimizer={"kind": "sgd", "lr": 1.0})
    body = npz_bytes(ids=np.array([1]), grads=np.array([[1.0, 2.0]]))
    headers = {**NPZ, "Idempotency-Key": f"push-{table_name}"}
    first = api.post(f"/v1/tables/{table_name}/gradients", content=body, headers=headers)
    second = api.post(f"/v1/tables/{table_name}/gradients", content=body, headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json() == {"rows": 1, "pending_rows": 1, "step": 0,
                                             "rows_updated": 0}
    assert second.headers["idempotent-replayed"] == "true"
    applied = api.post(f"/v1/tables/{table_name}/apply", headers={"Idempotency-Key": "a"})
    assert applied.json() == {"step": 1, "rows_updated": 1}
    weights = api.get(f"/v1/tables/{table_name}").json()
    assert weights["step"] == 1 and weights["pending_rows"] == 0


def test_settings_reach_the_middleware(make_app: Callable[..., FastAPI]) -> None:
    app = make_app(idempotency_max_keys=7, idempotency_ttl_seconds=3.5,
                   idempotency_max_bytes=12345)
    stack = app.build_middleware_stack()
    assert isinstance(stack, ServiceMiddleware)
    assert isinstance(stack.idempotency, Idempotency)
    store = stack.idempotency.store
    assert (store.max_keys, store.ttl_seconds, store.max_bytes) == (7, 3.5, 12345)
    assert store is app.state.idempotency


def test_a_key_reused_on_the_real_app_changes_nothing(api: httpx.Client, table_name: str) -> None:
    create(api, table_name, num_embeddings=4, embedding_dim=1, init={"kind": "zeros"})
    headers = {"Idempotency-Key": f"reuse-{table_name}"}
    path = f"/v1/tables/{table_name}/gradients"
    first = api.post(path, json={"ids": [1], "grads": [[1.0]]}, headers=headers)
    second = api.post(path, json={"ids": [2], "grads": [[1.0]]}, headers=headers)
    assert (first.status_code, second.status_code) == (200, 422)
    assert api.get(f"/v1/tables/{table_name}").json()["pending_rows"] == 1


# -- the store's memory: bounded in bytes, counted in the memory budget and /metrics ---------
def put_replies(store: ReplyStore, count: int, body_size: int, table: str = "words") -> None:
    """As the app makes them: a fresh path, header values and body for every reply."""
    for number in range(count):
        store.put(("POST", "/v1/tables/" + table + "/gradients", f"key-{number:06d}", ""),
                  bytes(32), 422, [(b"content-type", "application/json".encode("latin-1")),
                                   (b"content-length", str(body_size).encode())],
                  ("x" * body_size).encode())


def test_the_store_is_bounded_in_bytes() -> None:
    store = ReplyStore(max_keys=10**6, ttl_seconds=60, max_bytes=100_000, clock=lambda: 0.0)
    put_replies(store, 1000, 1000)
    assert 0.9 * 100_000 < store.nbytes <= 100_000
    assert 40 < len(store) < 100  # about 2,000 bytes each
    assert store.get(("POST", "/v1/tables/words/gradients", "key-000999", "")) is not None
    assert store.get(("POST", "/v1/tables/words/gradients", "key-000000", "")) is None


@pytest.mark.parametrize("body_size", [100, 2000])
def test_the_counted_bytes_are_what_the_replies_take(body_size: int) -> None:
    """The store's own count against tracemalloc's, for small and large replies: within 25%."""
    import tracemalloc

    store = ReplyStore(max_keys=10**6, ttl_seconds=60, max_bytes=2**30, clock=lambda: 0.0)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        put_replies(store, 2000, body_size)
        measured = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert 0.75 * measured <= store.nbytes <= 1.25 * measured


def test_the_store_counts_in_the_memory_budget_and_metrics(
    make_app: Callable[..., FastAPI],
) -> None:
    from starlette.testclient import TestClient

    with TestClient(make_app()) as client:
        registry, store = client.app.state.registry, client.app.state.idempotency  # type: ignore[attr-defined]
        assert registry.memory_used_bytes == 0
        for number in range(20):
            client.post("/v1/tables/nope/apply", headers={"Idempotency-Key": f"k{number}"})
        assert len(store) == 20 and store.nbytes > 20 * 100
        assert registry.memory_used_bytes == store.nbytes
        metrics = client.get("/metrics").text
    assert f"embed_idempotency_bytes {float(store.nbytes)}" in metrics
    assert "embed_idempotency_keys 20.0" in metrics
    assert f"embed_memory_used_bytes {float(store.nbytes)}" in metrics


def test_error_details_are_short(make_app: Callable[..., FastAPI]) -> None:
    """An unknown field name of 16 KB is not echoed whole (into the log, or the store)."""
    from starlette.testclient import TestClient

    with TestClient(make_app()) as client:
        create(client, "words")
        name = "f" * 16_000
        for path, body in (("/v1/tables/words/lookup", {"ids": [1], name: 1}),
                           ("/v1/tables", {"name": "x", "num_embeddings": 1,
                                           "embedding_dim": 1, name: 1})):
            reply = client.post(path, json=body, headers={"Idempotency-Key": path})
            assert reply.status_code == 422
            detail = reply.json()["detail"]
            assert len(detail) < 300 and detail.startswith("f" * 60), detail



def fingerprint_of(body: bytes, pieces: int = 1, query: bytes = b"apply=true",
                   content_type: bytes = b"application/x-npy") -> bytes:
    scope = {"method": "POST", "path": "/v1/tables/t/gradients", "query_string": query}
    fingerprint = RequestFingerprint(scope, content_type)
    step = max(1, -(-len(body) // pieces))
    parts = [body[start:start + step] for start in range(0, len(body), step)] or [b""]
    for number, part in enumerate(parts):
        fingerprint.add({"type": "http.request", "body": part,
                         "more_body": number < len(parts) - 1})
    assert fingerprint.complete
    return fingerprint.digest()


def test_the_fingerprint_sees_every_bit_of_the_body_and_not_its_pieces() -> None:
    body = np.random.default_rng(3).bytes(1 << 20)
    digest = fingerprint_of(body)
    assert fingerprint_of(body, pieces=7) == fingerprint_of(body, pieces=1000) == digest
    for position in (0, 1, 4095, 1 << 19, len(body) - 1):
        for bit in (0, 7):
            changed = bytearray(body)
            changed[position] ^= 1 << bit
            assert fingerprint_of(bytes(changed)) != digest, (position, bit)
    assert fingerprint_of(body[:-1]) != digest
    assert fingerprint_of(body, query=b"apply=false") != digest
    assert fingerprint_of(body, content_type=b"application/x-npz") != digest
    assert fingerprint_of(b"") != fingerprint_of(b"\0")
