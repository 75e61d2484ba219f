"""A shard's idempotency journal: the replies to keyed writes, kept and snapshotted with its rows.

A push carries an Idempotency-Key (one per logical push, the same on every retry, on every
shard it is split over). A shard answers a repeat with the first reply instead of adding the
gradient twice, as the single-process service's Idempotency middleware does; but here the key
is recorded under the shard's lock together with the push's effect, and the journal is written
into the shard's snapshot at the same instant as its rows. So after a restart from a snapshot
a retried push counts exactly once: replayed if the snapshot holds its effect, applied again if
the snapshot does not (the effect was lost with the shard).

Entries are service.api.middleware.replies' ReplyStore (bounded in keys, bytes and age, oldest
forgotten first), kept on the wall clock so that their age survives a restart on another node.
Not thread-safe: its shard calls it under the shard's lock.
"""

from __future__ import annotations

import base64
import dataclasses
import struct
import time
from typing import Any

import xxhash

from service.api.errors import IdempotencyKeyReused
from service.api.middleware.replies import ReplyStore, ScopedKey


def fingerprint(operation: str, query: bytes, content_type: str, body: bytes) -> bytes:
    """What tells two requests under one key apart: the middleware's RequestFingerprint's
    fields (XXH3-64 of the head, XXH3-128 and length of the body; service.api.middleware.
    idempotency says why XXH3: it runs over every keyed push's body)."""
    head = xxhash.xxh3_64_intdigest(b"\0".join((operation.encode(), query,
                                                content_type.encode())))
    return struct.pack("<Q", head) + xxhash.xxh3_128_digest(body) + struct.pack("<Q", len(body))


class Journal:
    """Replies by scoped key (operation, key, digest of the caller's Authorization)."""

    def __init__(self, max_keys: int, ttl_seconds: float, max_bytes: int) -> None:
        self.store = ReplyStore(max_keys, ttl_seconds, max_bytes, clock=time.time)

    @property
    def nbytes(self) -> int:
        return self.store.nbytes

    def __len__(self) -> int:
        return len(self.store)

    def replay(self, key: ScopedKey | None, print_: bytes, operation: str) -> bytes | None:
        """The first reply's body for this key, None if there is none; IdempotencyKeyReused
        if the key was used for another request."""
        if key is None or not self.store.max_keys:
            return None
        reply = self.store.get(key)
        if reply is None:
            return None
        if reply.fingerprint != print_:
            raise IdempotencyKeyReused(
                f"Idempotency-Key {key[2][:80]!r} was already used for another {operation} "
                "request (a different body, query or Content-Type); use a new key for each "
                "request")
        return reply.body

    def record(self, key: ScopedKey | None, print_: bytes, status: int, body: bytes) -> None:
        if key is not None and self.store.max_keys:
            self.store.put(key, print_, status, [], body)

    def to_json(self) -> list[Any]:
        """The live entries, for the shard's snapshot."""
        now = time.time()
        return [[list(key), base64.b64encode(reply.fingerprint).decode(), reply.status,
                 base64.b64encode(reply.body).decode(), reply.expires_at]
                for key, reply in self.store.replies.items() if reply.expires_at > now]

    def load_json(self, entries: Any) -> None:
        """Entries written by to_json (a snapshot's); anything unreadable is skipped (an
        idempotency memory is a convenience: losing it makes a retry count again)."""
        if not isinstance(entries, list):
            return
        now = time.time()
        for entry in entries:
            try:
                key, print_, status, body, expires_at = entry
                if float(expires_at) <= now:
                    continue
                method, path, name, authorization = (str(part) for part in key)
                scoped: ScopedKey = (method, path, name, authorization)
                self.store.put(scoped, base64.b64decode(print_), int(status), [],
                               base64.b64decode(body))
                stored = self.store.replies.get(scoped)
                if stored is not None:  # keep the age it had
                    self.store.replies[scoped] = dataclasses.replace(
                        stored, expires_at=float(expires_at))
            except (TypeError, ValueError):
                continue
