"""The replies remembered for Idempotency-Key requests (service.api.middleware.idempotency):
bounded in count, bytes and age, the oldest forgotten first, and counted against the tables'
memory budget (the store is a memory holder of the table registry; /metrics shows its bytes).
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import anyio

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
    return size + sys.getsizeof(bytes(32)) + 96 + ENTRY_OVERHEAD_BYTES  # fingerprint, Reply


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
