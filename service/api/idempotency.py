"""Idempotency keys as ASGI middleware: a retried request is answered, not run again.

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
import sys
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import (
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
    service_error_reply,
    shorten,
)

REPLAYED_HEADER = (b"idempotent-replayed", b"true")
METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_KEY_LENGTH = 255
MAX_REMEMBERED_BODY_BYTES = 16 * 2**10
FORGOTTEN_STATUSES = frozenset({401, 403, 408, 429})
# what an entry costs beyond its objects' own sizes: its OrderedDict slot and links
ENTRY_OVERHEAD_BYTES = 100

# (method, path, key, digest of the Authorization header)
ScopedKey = tuple[str, str, str, str]


@dataclass(frozen=True, slots=True)
class Reply:
    """The first reply to a key, as sent: replayed to every repeat until it expires."""

    expires_at: float
    fingerprint: bytes  # RequestFingerprint of the request it answered
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    nbytes: int  # what it costs remembered (entry_bytes)


def entry_bytes(key: ScopedKey, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    """The memory one remembered reply takes: body, headers, key, fingerprint, bookkeeping."""
    size = sys.getsizeof(body) + sys.getsizeof(headers) + sys.getsizeof(key)
    size += sum(sys.getsizeof(pair) + sys.getsizeof(pair[0]) + sys.getsizeof(pair[1])
                for pair in headers)
    size += sum(sys.getsizeof(part) for part in key)
    return size + sys.getsizeof(bytes(16)) + 96 + ENTRY_OVERHEAD_BYTES  # fingerprint, Reply


class ReplyStore:
    """Remembered replies by scoped key, oldest first, bounded in count, bytes and age. Used
    from one event loop only, so it needs no lock; `nbytes` may be read from any thread."""

    def __init__(
        self, max_keys: int, ttl_seconds: float, max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_keys = max_keys
        self.ttl_seconds = ttl_seconds
        self.max_bytes = max_bytes
        self.clock = clock
        self.nbytes = 0
        self.replies: OrderedDict[ScopedKey, Reply] = OrderedDict()
        # requests with a key whose reply has not been sent yet; repeats wait for the event
        self.flights: dict[ScopedKey, anyio.Event] = {}

    def __len__(self) -> int:
        return len(self.replies)

    def get(self, key: ScopedKey) -> Reply | None:
        reply = self.replies.get(key)
        if reply is not None and reply.expires_at <= self.clock():
            self._drop(key)
            return None
        return reply

    def put(
        self, key: ScopedKey, fingerprint: bytes, status: int,
        headers: list[tuple[bytes, bytes]], body: bytes,
    ) -> None:
        now = self.clock()
        if key in self.replies:
            self._drop(key)
        reply = Reply(now + self.ttl_seconds, fingerprint, status, headers, body,
                      entry_bytes(key, headers, body))
        if reply.nbytes > self.max_bytes:
            return
        self.replies[key] = reply
        self.nbytes += reply.nbytes
        self.forget_expired(now)
        while len(self.replies) > self.max_keys or self.nbytes > self.max_bytes:
            self._drop(next(iter(self.replies)))

    def forget_expired(self, now: float) -> None:
        """Drop expired replies from the front: every reply lives as long, so the oldest expire
        first."""
        while self.replies:
            oldest_key, oldest = next(iter(self.replies.items()))
            if oldest.expires_at > now:
                return
            self._drop(oldest_key)

    def _drop(self, key: ScopedKey) -> None:
        self.nbytes -= self.replies.pop(key).nbytes


class RequestFingerprint:
    """What tells two requests under one key apart: CRC-32 of method, path, query string and
    Content-Type, and CRC-32 and length of the body, fed as it is read (`add` each http.request
    message); `complete` once the last one is in.

    A checksum, not a cryptographic hash: it runs over every keyed push's body, and SHA-256
    costs several times as much as CRC-32 (a large share of a push's own time: see the
    README). CRC-32 catches every difference confined to 32 consecutive bits (a changed id)
    and misses others once in 2**32; a client can only fool it on purpose, to be sent its own
    earlier reply."""

    def __init__(self, scope: Scope, content_type: bytes) -> None:
        path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
        self._head = zlib.crc32(b"\0".join((scope["method"].encode(), path,
                                            scope.get("query_string", b""),
                                            content_type)))
        self._body = 0
        self._length = 0
        self.complete = False

    def add(self, message: Message) -> None:
        if message["type"] == "http.request" and not self.complete:
            chunk = message.get("body", b"")
            self._body = zlib.crc32(chunk, self._body)
            self._length += len(chunk)
            self.complete = not message.get("more_body", False)

    def digest(self) -> bytes:
        return struct.pack("<IIQ", self._head, self._body, self._length)


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
    """ASGI middleware answering repeated Idempotency-Key requests with the first reply."""

    def __init__(self, app: ASGIApp, store: ReplyStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in METHODS or not self.store.max_keys:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        raw_key = headers.get(b"idempotency-key")
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
        fingerprint = RequestFingerprint(scope, headers.get(b"content-type", b""))
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
        await self.run_once(scope, receive, send, scoped, fingerprint)

    async def run_once(
        self, scope: Scope, receive: Receive, send: Send, scoped: ScopedKey,
        fingerprint: RequestFingerprint,
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
            await self.app(scope, fingerprinting_receive, copying_send)
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
