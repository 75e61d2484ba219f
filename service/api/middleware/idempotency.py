"""Idempotency keys: a retried request is answered, not run again.

A gradient push or an apply must not count twice when a client retries it after a dropped
connection or a 503. The client sends an `Idempotency-Key` header (one key per logical call,
the same on every retry). For POST, PUT, PATCH and DELETE requests carrying one, this middleware
remembers the first reply (status, headers, body) and answers a repeat with it, adding
`Idempotent-Replayed: true`, without running the endpoint again. A repeat that arrives while the
first is still running waits for the first's reply.

- A key is scoped by method, path and Authorization header: the same key on another table (or
  from another caller) is another request.
- One key names one request: its fingerprint (`RequestFingerprint`) covers method, path, query
  string, Content-Type and body. A repeat with another fingerprint (another body, even of the
  same length or chunked) gets 422 and runs nothing. The body is fingerprinted as it streams to
  the endpoint (a first attempt is neither held back nor copied); if the endpoint answers
  without reading all of it, the rest is read before the reply goes out. A repeat reads its body
  to compare; one waiting for a first still running keeps it (it runs it if the first is
  forgotten).
- Replies with a status below 500 are remembered (a 4xx is deterministic), except 401, 403, 408
  and 429, which may well succeed later. A 5xx, an exception or an unfinished reply is forgotten
  so the retry runs: a 503 from a proxy never reached the endpoint.
- Replies larger than MAX_REMEMBERED_BODY_BYTES pass through unremembered (push, apply and
  create replies are a few hundred bytes; lookups are reads and carry no key).
- At most `max_keys` replies and `max_bytes` bytes (as `entry_bytes` counts them), each for
  `ttl_seconds`; the oldest are forgotten first. The bytes count against the memory budget (the
  store is a memory holder of the table registry) and show in /metrics.
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
from collections import deque

import anyio
import xxhash
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import (
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
    service_error_reply,
    shorten,
)
from service.api.middleware.replies import Reply, ReplyStore, ScopedKey

__all__ = ["Idempotency", "Reply", "ReplyStore", "RequestFingerprint"]

REPLAYED_HEADER = (b"idempotent-replayed", b"true")
METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_KEY_LENGTH = 255
MAX_REMEMBERED_BODY_BYTES = 16 * 2**10
FORGOTTEN_STATUSES = frozenset({401, 403, 408, 429})
class RequestFingerprint:
    """What tells two requests under one key apart: XXH3-64 of method, path, query string and
    Content-Type, and XXH3-128 and length of the body, fed as it is read (`add` each
    http.request message); `complete` once the last one is in.

    A non-cryptographic hash, not SHA-256 or CRC-32: it runs over every keyed push's body (1 MiB
    for 4096 x 64 float32), and XXH3 (xxhash, SIMD) hashes a MiB about ten times faster than
    zlib's CRC-32 and fifty times faster than BLAKE2 (docs/performance.md has the figures).
    Two different bodies share a 128-bit XXH3 by accident once in about 2**128; a client can
    only collide on purpose, to be sent its own earlier reply."""

    def __init__(self, scope: Scope, content_type: bytes) -> None:
        path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
        self._head = xxhash.xxh3_64_intdigest(b"\0".join((scope["method"].encode(), path,
                                                          scope.get("query_string", b""),
                                                          content_type)))
        self._body = xxhash.xxh3_128()
        self._length = 0
        self.complete = False

    def add(self, message: Message) -> None:
        if message["type"] == "http.request" and not self.complete:
            chunk = message.get("body", b"")
            self._body.update(chunk)
            self._length += len(chunk)
            self.complete = not message.get("more_body", False)

    def digest(self) -> bytes:
        return struct.pack("<Q", self._head) + self._body.digest() + struct.pack(
            "<Q", self._length)


async def read_rest(receive: Receive, fingerprint: RequestFingerprint, keep: bool) -> list[Message]:
    """Read the body to its end into the fingerprint; its messages if `keep`. ClientDisconnect
    if the client goes away first."""
    kept: list[Message] = []
    while not fingerprint.complete:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        fingerprint.add(message)
        if keep:
            kept.append(message)
    return kept


def replaying(messages: list[Message], receive: Receive) -> Receive:
    """A receive that gives `messages` (a body read ahead) first, then the connection's own."""
    queue = deque(messages)

    async def replay_receive() -> Message:
        return queue.popleft() if queue else await receive()

    return replay_receive


def remembered(status: int) -> bool:
    return status < 500 and status not in FORGOTTEN_STATUSES


class Idempotency:
    """Answers repeated Idempotency-Key requests with the first reply. An ASGI middleware on its
    own (`Idempotency(app, store)`); the service's middleware calls `key_of` and `serve` itself
    (service.api.middleware.stack), so a request without a key costs one header look-up."""

    def __init__(self, app: ASGIApp | None, store: ReplyStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "Idempotency(app=None) is only called through serve()"
        headers = Headers(scope=scope)
        key = self.key_of(scope, headers) if scope["type"] == "http" else None
        if key is None:
            await self.app(scope, receive, send)
        else:
            await self.serve(scope, receive, send, headers, key, self.app)

    def key_of(self, scope: Scope, headers: Headers) -> str | None:
        """The request's Idempotency-Key if it has one and its method takes keys."""
        if scope["method"] not in METHODS or not self.store.max_keys:
            return None
        return headers.get("idempotency-key")

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, headers: Headers, key: str,
        app: ASGIApp,
    ) -> None:
        """Run `app` for the first request under the key; answer repeats with its reply."""
        if not 0 < len(key) <= MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
            await service_error_reply(InvalidIdempotencyKey(
                f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable ASCII characters, got "
                f"{key[:80]!r}"))(scope, receive, send)
            return
        credentials = headers.get("authorization")
        authorization = (hashlib.sha256(credentials.encode("latin-1")).hexdigest()
                         if credentials else "")
        scoped: ScopedKey = (scope["method"], scope["path"], key, authorization)
        fingerprint = RequestFingerprint(scope, headers.get("content-type", "").encode("latin-1"))
        body: list[Message] | None = None  # read ahead while waiting for a first attempt
        while True:
            reply = self.store.get(scoped)
            if reply is not None:
                await read_rest(receive, fingerprint, keep=False)
                if reply.fingerprint != fingerprint.digest():
                    await service_error_reply(IdempotencyKeyReused(
                        f"Idempotency-Key {shorten(key)!r} was already used for another "
                        f"{scope['method']} {shorten(scope['path'])} request (a different body, "
                        "query or Content-Type); use a new key for each request",
                    ))(scope, receive, send)
                    return
                await replay(send, reply)
                return
            flight = self.store.flights.get(scoped)
            if flight is None:
                break
            if body is None:
                body = await read_rest(receive, fingerprint, keep=True)
            await flight.wait()  # then either its reply is remembered, or we run it
        if body is not None:
            receive = replaying(body, receive)
        await self.run_once(scope, receive, send, scoped, fingerprint, app)

    async def run_once(
        self, scope: Scope, receive: Receive, send: Send, scoped: ScopedKey,
        fingerprint: RequestFingerprint, app: ASGIApp,
    ) -> None:
        """Run the request, fingerprinting its body as it is read and copying its reply as it
        is sent, and remember the reply if it completes."""
        flight = self.store.flights[scoped] = anyio.Event()
        status = 0
        reply_headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        size = 0
        complete = False

        async def fingerprinting_receive() -> Message:
            message = await receive()
            fingerprint.add(message)
            return message

        async def copying_send(message: Message) -> None:
            nonlocal status, reply_headers, size, complete
            if message["type"] == "http.response.start":
                status = message["status"]
                reply_headers = list(message.get("headers", []))
                if not fingerprint.complete:  # answered before reading its whole body; if the
                    # client leaves meanwhile, the fingerprint stays incomplete: not remembered
                    with contextlib.suppress(ClientDisconnect):
                        await read_rest(receive, fingerprint, keep=False)
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                size += len(body)
                if size <= MAX_REMEMBERED_BODY_BYTES:
                    chunks.append(body)
                complete = not message.get("more_body", False)
            await send(message)

        try:
            await app(scope, fingerprinting_receive, copying_send)
        finally:
            del self.store.flights[scoped]
            if (complete and fingerprint.complete and remembered(status)
                    and size <= MAX_REMEMBERED_BODY_BYTES):
                self.store.put(scoped, fingerprint.digest(), status, reply_headers,
                               b"".join(chunks))
            flight.set()


async def replay(send: Send, reply: Reply) -> None:
    await send({
        "type": "http.response.start",
        "status": reply.status,
        "headers": [*reply.headers, REPLAYED_HEADER],
    })
    await send({"type": "http.response.body", "body": reply.body})
