"""The binary fast path (service.api.middleware.fast_path) against the FastAPI routes it stands
in for: the same requests, good and bad, sent to an app with it and an app without it, get the same
status, headers and body bytes, leave the same tables, count the same metrics and log the same
access lines. Every binary case of the bad-input suite is among them."""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from service.api import codecs, handlers
from service.api.middleware.routes import POLICY_ATTRIBUTE
from service.api.routes import operations
from tests.api.test_bad_input import (
    CASES,
    NPY,
    NPZ,
    TAGS,
    USERS,
    WORDS,
    checksum,
    npz,
    set_up_tables,
)

TOKEN = "fast-path-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def pair(ids: Any, grads: Any) -> bytes:
    """ids.npy and grads.npy back to back, as np.save twice into one stream writes them."""
    stream = io.BytesIO()
    np.save(stream, np.asarray(ids))
    np.save(stream, np.asarray(grads))
    return stream.getvalue()


# (method, path, request keywords): good binary requests, then the edges of the fast path
REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", f"{WORDS}/lookup", {"content": codecs.to_npy(np.array([3, 1, 3])), "headers": NPY}),
    ("POST", f"{WORDS}/lookup", {"content": codecs.to_npy(np.array([[0, 9], [4, 4]])),
                                 "headers": NPY}),
    ("POST", f"{WORDS}/lookup", {"content": codecs.to_npy(np.array(7)), "headers": NPY}),
    ("POST", f"{WORDS}/lookup", {"content": codecs.to_npy(np.zeros(0, np.int64)),
                                 "headers": NPY}),
    ("POST", f"{WORDS}/lookup", {"content": codecs.to_npy(np.asfortranarray(
        np.arange(6).reshape(2, 3))), "headers": NPY}),
    ("POST", f"{WORDS}/lookup", {"content": codecs.to_npy(np.array([1, 2], np.uint16)),
                                 "headers": {**NPY, "Accept": "application/json"}}),
    ("POST", f"{WORDS}/lookup", {"content": codecs.to_npy(np.array([1])),
                                 "headers": {**NPY, "Accept": "*/*"}}),
    ("POST", f"{WORDS}/lookup", {"content": codecs.to_npy(np.array([1])),
                                 "headers": {"Content-Type": "Application/X-NPY; v=1"}}),
    ("POST", f"{TAGS}/lookup", {"content": codecs.to_npy(np.array([5, 0])), "headers": NPY}),
    ("POST", f"{WORDS}/gradients", {"content": pair([1, 1, 8], np.ones((3, 4), np.float32)),
                                    "headers": NPY}),
    ("POST", f"{WORDS}/gradients?apply=true", {"content": pair([2, 3], np.ones((2, 4))),
                                               "headers": NPY}),
    ("POST", f"{WORDS}/gradients", {"content": npz(ids=np.array([0, 0]),
                                                   grads=np.full((2, 4), 0.25)), "headers": NPZ}),
    ("POST", f"{TAGS}/gradients?step=3&apply=1", {"content": pair([4], [[1.0, 2.0, 3.0]]),
                                                  "headers": NPY}),
    ("POST", f"{TAGS}/gradients?step=1", {"content": pair([4], [[1.0, 2.0, 3.0]]),
                                          "headers": NPY}),  # stale: 409
    ("POST", f"{WORDS}/gradients", {"content": pair([1], np.ones((1, 4))),
                                    "headers": {**NPY, "Idempotency-Key": "k-1"}}),
    ("POST", f"{WORDS}/gradients", {"content": pair([1], np.ones((1, 4))),
                                    "headers": {**NPY, "Idempotency-Key": "k-1"}}),  # replayed
    ("POST", f"{WORDS}/gradients", {"content": pair([1, 2], np.ones((2, 4)))[:-1],
                                    "headers": NPY}),
    ("POST", f"{WORDS}/gradients", {"content": pair([1], np.ones((1, 4))) + b"x",
                                    "headers": NPY}),
    ("POST", f"{WORDS}/gradients", {"content": pair([1], np.ones((2, 4))), "headers": NPY}),
    ("POST", f"{WORDS}/gradients", {"content": pair([1], np.ones((1, 4))) + b"\x93NUMPY",
                                    "headers": NPY}),
    ("POST", f"{WORDS}/lookup", {"content": b"x" * 70_000, "headers": NPY}),  # body limit
    ("POST", f"{WORDS}/lookup", {"content": codecs.to_npy(np.arange(2000) % 10),
                                 "headers": NPY}),  # over max_ids_per_request
    ("POST", "/v1/tables/nope/lookup", {"content": codecs.to_npy(np.array([1])),
                                        "headers": NPY}),
    ("POST", f"{WORDS}/lookup/", {"content": codecs.to_npy(np.array([1])), "headers": NPY}),
    ("POST", f"{WORDS}/lookup", {"content": codecs.to_npy(np.array([1])),
                                 "headers": {**NPY, "Accept": "text/html"}}),
    ("GET", f"{WORDS}/lookup", {"headers": NPY}),
    # a dynamic table: uint64 and int64 keys, new and live, admitted or not
    ("POST", f"{USERS}/lookup", {"content": codecs.to_npy(np.array([2**63 + 5, 3, 7],
                                                                   np.uint64)), "headers": NPY}),
    ("POST", f"{USERS}/gradients", {"content": pair([-1, 42, 42], np.ones((3, 4), np.float32)),
                                    "headers": NPY}),
    ("POST", f"{USERS}/gradients?apply=true&step=2", {
        "content": npz(ids=np.array([2**64 - 1, 42, 2**63 + 5], np.uint64),
                       grads=np.full((3, 4), 0.5, np.float32)), "headers": NPZ}),
    ("POST", f"{USERS}/lookup", {"content": codecs.to_npy(np.array([[-1, 42], [5, 7]])),
                                 "headers": {**NPY, "Accept": "application/json"}}),
    *[(case.method, case.path, case.request) for case in CASES
      if case.request.get("headers") in (NPY, NPZ)],
    # what the middleware in front of both does: auth, body limits (declared and chunked),
    # idempotency keys, routes that do not exist or do not take the method
    ("POST", f"{WORDS}/lookup", {"content": codecs.to_npy(np.array([1])),
                                 "headers": {**NPY, "Authorization": None}}),  # no token
    ("POST", f"{WORDS}/gradients", {"content": pair([1], np.ones((1, 4))),
                                    "headers": {**NPY, "Authorization": "Bearer wrong"}}),
    ("POST", f"{WORDS}/lookup", {"content": codecs.to_npy(np.array([1])),
                                 "headers": {**NPY, "Authorization": f"Basic {TOKEN}"}}),
    ("POST", f"{WORDS}/lookup", {"content": b"x" * 70_000, "headers": {
        **NPY, "Authorization": None}}),  # a stranger's body over the limit: 401, not 413
    ("POST", f"{WORDS}/lookup", {"chunked": codecs.to_npy(np.array([2, 5, 2])),
                                 "headers": NPY}),  # no Content-Length, within the limit
    ("POST", f"{WORDS}/gradients", {"chunked": pair(np.zeros(3000, np.int64),
                                                     np.ones((3000, 4), np.float32)),
                                    "headers": NPY}),  # no Content-Length, over the limit
    ("POST", f"{WORDS}/gradients", {"content": pair([3], np.ones((1, 4))),
                                    "headers": {**NPY, "Idempotency-Key": "k" * 300}}),
    ("POST", f"{WORDS}/gradients", {"content": pair([3], np.ones((1, 4))),
                                    "headers": {**NPY, "Idempotency-Key": "k-2"}}),
    ("POST", f"{WORDS}/gradients", {"content": pair([4], np.ones((1, 4))),
                                    "headers": {**NPY, "Idempotency-Key": "k-2"}}),  # reused
    ("POST", f"{WORDS}/gradients", {"chunked": pair([3], np.ones((1, 4))),
                                    "headers": {**NPY, "Idempotency-Key": "k-2"}}),  # replayed
    ("POST", f"{WORDS}/lookup", {"content": codecs.to_npy(np.array([0])),
                                 "headers": {**NPY, "Idempotency-Key": "k-3"}}),
    ("POST", f"{WORDS}/lookup", {"content": codecs.to_npy(np.array([0])),
                                 "headers": {**NPY, "Idempotency-Key": "k-3"}}),  # replayed
    ("POST", f"{WORDS}/gradients", {"content": b"x" * 70_000,
                                    "headers": {**NPY, "Idempotency-Key": "k-4"}}),  # 413
    ("HEAD", f"{WORDS}/lookup", {"headers": NPY}),
    ("PUT", f"{WORDS}/gradients", {"content": pair([1], np.ones((1, 4))), "headers": NPY}),
    ("POST", "/v1/nothing/here", {"content": codecs.to_npy(np.array([1])), "headers": NPY}),
    ("POST", "/v1/nothing/here", {"content": codecs.to_npy(np.array([1])),
                                  "headers": {**NPY, "Authorization": None}}),
    ("GET", "/healthz", {"headers": {"Authorization": None}}),  # open
]


def send(client: TestClient, method: str, path: str, request: dict[str, Any]) -> Any:
    """client.request, where a header set to None is left out (the client sends the token by
    default) and "chunked" is a body sent without a Content-Length, in pieces."""
    request = dict(request)
    headers = request.pop("headers", {})
    chunked = request.pop("chunked", None)
    if chunked is not None:
        request["content"] = iter([chunked[i:i + 1000] for i in range(0, len(chunked), 1000)])
    built = client.build_request(method, path, headers={
        key: value for key, value in headers.items() if value is not None}, **request)
    for key, value in headers.items():
        if value is None:
            del built.headers[key]
    return client.send(built)


def build(make_app: Callable[..., FastAPI], fast: bool) -> FastAPI:
    """An app of the bad-input suite's limits, with its own empty data directory."""
    return make_app(max_body_bytes=65536, max_ids_per_request=1000,
                    memory_budget_bytes=10 * 2**20, token=TOKEN, binary_fast_path=fast)


@pytest.fixture
def served(make_app: Callable[..., FastAPI]) -> Iterator[Callable[[bool], list[Any]]]:
    """Factory: the replies, access-log lines, table checksums and row metrics of REQUESTS on
    an app with (True) or without (False) the fast path."""

    def serve(fast: bool) -> list[Any]:
        app = build(make_app, fast)
        lines: list[dict[str, Any]] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                fields = dict(getattr(record, "fields", {}))
                fields.pop("duration_ms", None)
                lines.append(fields)

        keep = Keep()
        logging.getLogger("service.access").addHandler(keep)
        try:
            with TestClient(app, headers=AUTH) as client:
                set_up_tables(client)
                replies = [send(client, method, path, request)
                           for method, path, request in REQUESTS]
                metrics = [line for line in client.get("/metrics").text.splitlines()
                           if line.startswith(("embed_http_requests_total", "embed_rows_"))]
        finally:
            logging.getLogger("service.access").removeHandler(keep)
        return [[(r.status_code, r.headers.multi_items(), r.content) for r in replies],
                lines, checksum(app.state.registry), metrics]

    yield serve


def test_same_replies_state_metrics_and_logs_with_and_without_the_fast_path(
    served: Callable[[bool], list[Any]],
) -> None:
    fast_replies, fast_lines, fast_tables, fast_metrics = served(True)
    slow_replies, slow_lines, slow_tables, slow_metrics = served(False)
    for (method, path, _), fast, slow in zip(REQUESTS, fast_replies, slow_replies, strict=True):
        assert fast == slow, f"{method} {path}"
    assert fast_lines == slow_lines
    assert fast_tables == slow_tables
    assert fast_metrics == slow_metrics
    statuses = {status for status, _, _ in fast_replies}
    assert {200, 401, 404, 405, 406, 409, 413, 415, 422} <= statuses  # every kind is reached
    replayed = [headers for _, headers, _ in fast_replies if ("idempotent-replayed", "true")
                in headers]
    assert len(replayed) == 3


def test_binary_requests_take_the_fast_path_and_json_ones_the_routes(
    monkeypatch: pytest.MonkeyPatch, make_app: Callable[..., FastAPI]
) -> None:
    """The fast path reads the body itself (its own read_body); the routes pass request.body."""
    readers: list[str] = []
    original = handlers.lookup

    async def spy(exchange: handlers.Exchange) -> Any:
        readers.append(getattr(exchange.read_body, "func", exchange.read_body).__qualname__)
        return await original(exchange)

    monkeypatch.setattr(handlers, "lookup", spy)  # what the FastAPI route calls
    offered = dataclasses.replace(getattr(operations.lookup, POLICY_ATTRIBUTE), binary=spy)
    monkeypatch.setattr(operations.lookup, POLICY_ATTRIBUTE, offered)  # what the fast path calls
    with TestClient(build(make_app, True), headers=AUTH) as client:
        set_up_tables(client)
        binary = client.post(f"{WORDS}/lookup", content=codecs.to_npy(np.array([2])),
                             headers=NPY)
        json = client.post(f"{WORDS}/lookup", json={"ids": [2]})
    assert (binary.status_code, json.status_code) == (200, 200)
    assert readers == ["read_into_buffer", "Request.body"]
    rows = np.load(io.BytesIO(binary.content))  # (1, 4) float32
    assert rows.tolist() == np.asarray(json.json()["vectors"], dtype=np.float32).tolist()


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_body_in_many_pieces_is_read_as_the_same_bytes(
    make_app: Callable[..., FastAPI], declared: bool
) -> None:
    """uvicorn hands a large body over in pieces (as read from the socket). The fast path copies
    them into one buffer as they come (Content-Length known) or joins them (chunked): either way
    the same replies and tables as when the body arrives whole."""
    posts = [(path, request) for method, path, request in REQUESTS
             if method == "POST" and len(request.get("content", b"")) > 1
             and None not in request.get("headers", {}).values()  # (a header left out)
             and (declared or len(request["content"]) <= 65536)]  # (a chunked body over the
    # limit is refused by its size as read, not by a Content-Length: another sentence)
    rng = np.random.default_rng(0)
    whole_app, pieces_app = build(make_app, True), build(make_app, True)

    def split(content: bytes) -> list[bytes]:
        cuts = sorted(set(rng.integers(1, len(content), size=min(5, len(content) - 1)).tolist()))
        return [content[a:b] for a, b in zip([0, *cuts], [*cuts, len(content)], strict=True)]

    async def in_pieces(path: str, request: dict[str, Any]) -> tuple[int, bytes]:
        pieces = split(request["content"])
        headers = [(key.lower().encode(), value.encode()) for key, value in
                   {**AUTH, **request.get("headers", {})}.items()]
        if declared:
            headers.append((b"content-length", str(len(request["content"])).encode()))
        route, _, query = path.partition("?")
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": route, "raw_path": route.encode(),
                 "query_string": query.encode(), "root_path": "", "headers": headers,
                 "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
        messages = [{"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
                    for i, piece in enumerate(pieces)]
        replies: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            replies.append(message)

        await pieces_app(scope, receive, send)
        return replies[0]["status"], b"".join(m.get("body", b"") for m in replies[1:])

    with TestClient(whole_app, headers=AUTH) as whole, \
            TestClient(pieces_app, headers=AUTH) as pieces:
        set_up_tables(whole)
        set_up_tables(pieces)
        for path, request in posts:
            expected = whole.post(path, follow_redirects=False, **request)
            got = pieces.portal.call(in_pieces, path, request)  # type: ignore[union-attr]
            assert got == (expected.status_code, expected.content), path
        assert checksum(whole_app.state.registry) == checksum(pieces_app.state.registry)
