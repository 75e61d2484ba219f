"""Idempotency keys as ASGI middleware: a retried request is answered, not run again.

A gradient push or an apply must not count twice when a client retries it after a dropped
connection or a 503. The client sends an `Idempotency-Key` header (one key per logical call,
the same on every retry). For POST, PUT, PATCH and DELETE requests carrying one, this middleware
remembers the first reply (status, headers, body) and answers a repeat with it, adding
`Idempotent-Replayed: true`, without running the endpoint again. A repeat that arrives while the
first is still running waits for the first's reply.

    POST /v1/tables/words/gradients   Idempotency-Key: 5f0c...   -> 200, gradient added
    POST /v1/tables/words/gradients   Idempotency-Key: 5f0c...   -> the same 200, replayed

What is remembered, and for how long:
- A key is scoped by method, path and Authorization header: the same key on another table (or
  from another caller) is another request.
- Replies with a status below 500 are remembered (a 4xx is deterministic), except 401, 403, 408
  and 429, which may well succeed later. A 5xx, an exception or an unfinished reply is forgotten
  so the retry runs: a 503 from a proxy never reached the endpoint.
- Replies larger than MAX_REMEMBERED_BODY_BYTES pass through unremembered (push, apply and
  create replies are a few hundred bytes; lookups are reads and carry no key).
- At most `max_keys` replies, each for `ttl_seconds`; the oldest are forgotten first. A push
  reply costs about 600 bytes remembered: 100,000 keys (the default) hold about 60 MB.
- A key reused with another query string, Content-Type or Content-Length gets 422: one key names
  one request.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import IdempotencyKeyReused, InvalidIdempotencyKey, service_error_reply

KEY_HEADER = b"idempotency-key"
REPLAYED_HEADER = (b"idempotent-replayed", b"true")
METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_KEY_LENGTH = 255
MAX_REMEMBERED_BODY_BYTES = 16 * 2**10
FORGOTTEN_STATUSES = frozenset({401, 403, 408, 429})

# (method, path, key, digest of the Authorization header)
ScopedKey = tuple[str, str, str, str]
# (query string, Content-Type, Content-Length) of the request
Fingerprint = tuple[bytes, bytes, bytes]


@dataclass(frozen=True, slots=True)
class Reply:
    """The first reply to a key, as sent: replayed to every repeat until it expires."""

    expires_at: float
    fingerprint: Fingerprint
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass(slots=True)
class Flight:
    """A request with a key whose reply has not been sent yet; repeats wait on `done`."""

    fingerprint: Fingerprint
    done: anyio.Event


class ReplyStore:
    """Remembered replies by scoped key, oldest first, bounded in count and age. Used from one
    event loop only, so it needs no lock."""

    def __init__(
        self, max_keys: int, ttl_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_keys = max_keys
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self.replies: OrderedDict[ScopedKey, Reply] = OrderedDict()
        self.flights: dict[ScopedKey, Flight] = {}

    def __len__(self) -> int:
        return len(self.replies)

    def get(self, key: ScopedKey) -> Reply | None:
        reply = self.replies.get(key)
        if reply is not None and reply.expires_at <= self.clock():
            del self.replies[key]
            return None
        return reply

    def put(
        self, key: ScopedKey, fingerprint: Fingerprint, status: int,
        headers: list[tuple[bytes, bytes]], body: bytes,
    ) -> None:
        now = self.clock()
        self.replies[key] = Reply(now + self.ttl_seconds, fingerprint, status, headers, body)
        self.replies.move_to_end(key)
        self.forget_expired(now)
        while len(self.replies) > self.max_keys:
            self.replies.popitem(last=False)

    def forget_expired(self, now: float) -> None:
        """Drop expired replies from the front: every reply lives as long, so the oldest expire
        first."""
        while self.replies:
            oldest = next(iter(self.replies.values()))
            if oldest.expires_at > now:
                return
            self.replies.popitem(last=False)


def remembered(status: int) -> bool:
    return status < 500 and status not in FORGOTTEN_STATUSES


class Idempotency:
    """ASGI middleware answering repeated Idempotency-Key requests with the first reply."""

    def __init__(self, app: ASGIApp, max_keys: int, ttl_seconds: float) -> None:
        self.app = app
        self.store = ReplyStore(max_keys, ttl_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in METHODS or not self.store.max_keys:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        raw_key = headers.get(KEY_HEADER)
        if raw_key is None:
            await self.app(scope, receive, send)
            return
        key = raw_key.decode("latin-1")
        if not 0 < len(key) <= MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
            await service_error_reply(InvalidIdempotencyKey(
                f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable ASCII characters, got "
                f"{key[:80]!r}"))(scope, receive, send)
            return
        credentials = headers.get(b"authorization")
        authorization = hashlib.sha256(credentials).hexdigest() if credentials else ""
        scoped: ScopedKey = (scope["method"], scope["path"], key, authorization)
        fingerprint: Fingerprint = (
            scope.get("query_string", b""),
            headers.get(b"content-type", b""),
            headers.get(b"content-length", b""),
        )
        while True:
            reply = self.store.get(scoped)
            flight = self.store.flights.get(scoped)
            earlier = reply.fingerprint if reply else flight.fingerprint if flight else None
            if earlier is not None and earlier != fingerprint:
                await service_error_reply(IdempotencyKeyReused(
                    f"Idempotency-Key {key!r} was already used for another {scope['method']} "
                    f"{scope['path']} request (different query, Content-Type or Content-Length); "
                    "use a new key for each request"))(scope, receive, send)
                return
            if reply is not None:
                await replay(send, reply)
                return
            if flight is None:
                break
            await flight.done.wait()  # then either its reply is remembered, or we run it
        await self.run_once(scope, receive, send, scoped, fingerprint)

    async def run_once(
        self, scope: Scope, receive: Receive, send: Send, scoped: ScopedKey,
        fingerprint: Fingerprint,
    ) -> None:
        """Run the request, copying its reply as it is sent, and remember it if it completes."""
        flight = Flight(fingerprint, anyio.Event())
        self.store.flights[scoped] = flight
        status = 0
        reply_headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        size = 0
        complete = False

        async def copying_send(message: Message) -> None:
            nonlocal status, reply_headers, size, complete
            if message["type"] == "http.response.start":
                status = message["status"]
                reply_headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                size += len(body)
                if size <= MAX_REMEMBERED_BODY_BYTES:
                    chunks.append(body)
                complete = not message.get("more_body", False)
            await send(message)

        try:
            await self.app(scope, receive, copying_send)
        finally:
            del self.store.flights[scoped]
            if complete and remembered(status) and size <= MAX_REMEMBERED_BODY_BYTES:
                self.store.put(scoped, fingerprint, status, reply_headers, b"".join(chunks))
            flight.done.set()


async def replay(send: Send, reply: Reply) -> None:
    await send({
        "type": "http.response.start",
        "status": reply.status,
        "headers": [*reply.headers, REPLAYED_HEADER],
    })
    await send({"type": "http.response.body", "body": reply.body})

