"""Each id straight to the shard that holds it: the SDK's side of a cluster-mode service.

A front of a cluster-mode service (EMBED_CLUSTER=ray) marks its replies to a sharded table's
lookups, pushes and applies with `X-Shard-Map: <version>`; the client then asks it for the
table's map (GET /v1/tables/{name}/shards: each shard's server, the table's limits) and from
then on splits each lookup and push by the key hash (service.sharding) and sends the parts to
the shards' own servers together (each answers only for its rows), applies and the pushes that
step the table (apply=true) or check staleness (step) to shard 0, the table's leader. The front
and the leader split requests with the same functions, so a part is the same bytes whoever
sends it (a retried push's parts replay on the shards that already took them).

Anything the map cannot vouch for goes to the front instead, which answers as a single-process
service would: ids or grads it would refuse (wrong type, out of range, not finite, over a
limit), and any part that fails (a shard restarting or moved, an old map). The front's reply
carries the map's new version, so routing resumes on its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import orjson

from service import npy
from service.client._codecs import JSON, NPY
from service.client._wire import RESPONSE_TYPES, AnyResponse, Call, RequestFactory, failure
from service.client.models import ApplyResult, Lookup, PushResult
from service.sharding import Split, gather, split

SHARD_HEADER = "X-Shard"  # "<generation>/<shard>" on every part: which shard it is meant for
MAP_HEADER = "x-shard-map"  # on a front's replies: the table's map version
UNREACHABLE_SECONDS = 30.0  # a shard server we could not connect to is not tried for this long


@dataclass(frozen=True)
class ShardMap:
    """Where a table's shards are, and what the front would accept (so that only requests it
    would accept are routed)."""

    table: str
    generation: str
    version: str
    urls: tuple[str, ...]
    num_embeddings: int | None  # None: a dynamic table (any integer id is a key)
    embedding_dim: int
    dtype: np.dtype[Any]
    max_ids: int
    max_rows_bytes: int

    @classmethod
    def from_json(cls, reply: dict[str, Any]) -> ShardMap:
        return cls(reply["name"], reply["generation"], reply["version"],
                   tuple(reply["urls"]),
                   None if reply["num_embeddings"] is None else int(reply["num_embeddings"]),
                   int(reply["embedding_dim"]), np.dtype(reply["dtype"]),
                   int(reply["max_ids_per_request"]), int(reply["max_rows_bytes"]))

    @property
    def shards(self) -> int:
        return len(self.urls)

    def header(self, shard: int) -> dict[str, str]:
        return {SHARD_HEADER: f"{self.generation}/{shard}"}

    def takes_ids(self, ids: np.ndarray) -> bool:
        """Integer ids, within the limits and the table: what the shards answer exactly as the
        front would."""
        if ids.dtype.kind not in "iu" or ids.size > self.max_ids:
            return False
        if ids.ndim and max(ids.shape) > self.max_ids:
            return False
        if ids.size * self.embedding_dim * self.dtype.itemsize > self.max_rows_bytes:
            return False
        if self.num_embeddings is None:
            return True
        return ids.size == 0 or (int(ids.min()) >= 0 and int(ids.max()) < self.num_embeddings)

    def takes_push(self, ids: np.ndarray, grads: np.ndarray) -> bool:
        """takes_ids, and grads every shard would take: shape, numbers, finite in the table's
        dtype (a NaN in one part must not leave the other parts pushed). One pass over grads:
        their sum is finite only if every one is (a sum that overflows sends the push to the
        front, which takes it)."""
        if not self.takes_ids(ids) or grads.shape != (*ids.shape, self.embedding_dim):
            return False
        if grads.dtype.kind not in "fiu":
            return False
        if grads.dtype.kind != "f" or grads.size == 0:
            return True
        with np.errstate(all="ignore"):
            if grads.dtype.itemsize > self.dtype.itemsize:  # cast down: each must fit
                limit = float(np.finfo(self.dtype).max)
                return bool(grads.max() <= limit and grads.min() >= -limit)  # NaN: False
            return bool(np.isfinite(np.add.reduce(grads, axis=None)))


def lookup_parts(ids: np.ndarray, shards: int) -> tuple[Split, dict[int, bytes]]:
    """The .npy body of each shard that holds some of `ids` (flattened, in request order)."""
    where = split(ids, shards)
    flat = np.ascontiguousarray(ids).reshape(-1)
    return where, {shard: npy.encode(flat[positions])
                   for shard, positions in enumerate(where.positions) if len(positions)}


def merge_lookup(where: Split, shape: tuple[int, ...], replies: dict[int, np.ndarray],
                 dim: int, dtype: np.dtype[Any]) -> np.ndarray:
    """The rows in request order, shaped ids.shape + (dim,)."""
    empty = np.empty((0, dim), dtype=dtype)
    parts = [replies.get(shard, empty) for shard in range(where.shards)]
    return gather(where, parts, (dim,), dtype).reshape(*shape, dim)


def push_parts(ids: np.ndarray, grads: np.ndarray, shards: int, dim: int) -> list[bytes]:
    """ids.npy + grads.npy for every shard, in request order (an empty part for a shard that
    holds none of them: shard 0 counts every push, and every shard reports its pending rows
    and step)."""
    flat_ids = np.asarray(ids).reshape(-1)
    flat_grads = np.asarray(grads).reshape(flat_ids.size, dim)  # (n, dim)
    where = split(flat_ids, shards)
    return [npy.encode(flat_ids[positions], flat_grads[positions])
            for positions in where.positions]


def merge_push_replies(replies: list[dict[str, Any]]) -> dict[str, Any]:
    """One push's reply from its parts': rows and pending rows summed, the step the lowest
    (the same on every shard unless a step was being taken meanwhile)."""
    merged = {"rows": sum(int(reply["rows"]) for reply in replies),
              "pending_rows": sum(int(reply["pending_rows"]) for reply in replies),
              "step": min(int(reply["step"]) for reply in replies),
              "rows_updated": sum(int(reply.get("rows_updated", 0)) for reply in replies)}
    if any("dropped_rows" in reply for reply in replies):  # a dynamic table's admission
        merged["dropped_rows"] = sum(int(reply.get("dropped_rows", 0)) for reply in replies)
    return merged


class Unreachable:
    """Shard servers that refused a connection lately: not tried again for a while (a
    network where the client cannot reach them, a NAT: the front then serves)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def mark(self, url: str) -> None:
        self._until[url] = time.monotonic() + UNREACHABLE_SECONDS

    def any_of(self, urls: tuple[str, ...]) -> bool:
        now = time.monotonic()
        return any(self._until.get(url, 0.0) > now for url in urls)


def _identity(response: AnyResponse) -> AnyResponse:
    return response


def _ok(reply: AnyResponse | Exception) -> bool:
    return isinstance(reply, RESPONSE_TYPES) and reply.status_code == 200


class Router:
    """A client's maps of sharded tables and how it routes by them (sync and async clients
    alike: `send_parts` sends a list of (url, call) and returns each reply or exception). Each
    method returns None when the request must go to the front instead."""

    def __init__(self, token: str | None, connect_timeout: float, read_timeout: float,
                 enabled: bool) -> None:
        self.enabled = enabled
        self.token = token
        self.timeouts = {"connect": min(connect_timeout, 2.0), "read": read_timeout,
                         "write": read_timeout, "pool": read_timeout}
        self.maps: dict[str, ShardMap] = {}
        self.unreachable = Unreachable()
        self._factories: dict[str, RequestFactory] = {}
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout

    def factory(self, url: str) -> RequestFactory:
        factory = self._factories.get(url)
        if factory is None:
            factory = self._factories[url] = RequestFactory(url, self.token,
                                                            self.timeouts["connect"],
                                                            self._read_timeout)
        return factory

    def map_of(self, table: str) -> ShardMap | None:
        shard_map = self.maps.get(table) if self.enabled else None
        if shard_map is None or self.unreachable.any_of(shard_map.urls):
            return None
        return shard_map

    def wants_map(self, table: str, response: AnyResponse) -> bool:
        """A front's reply about `table`: whether to fetch the table's map (it names a version
        we do not hold); a reply without one (a single-process service, an error) drops it."""
        if not self.enabled:
            return False
        version = response.headers.get(MAP_HEADER)
        if not version or response.status_code >= 400:
            self.maps.pop(table, None)
            return False
        known = self.maps.get(table)
        return known is None or known.version != version

    def keep(self, table: str, shard_map: ShardMap | None) -> None:
        if shard_map is None or not shard_map.urls:
            self.maps.pop(table, None)
        else:
            self.maps[table] = shard_map

    def succeeded(self, shard_map: ShardMap, calls: list[tuple[int, str, Call[Any]]],
                  replies: list[AnyResponse | Exception]) -> bool:
        """Whether every part succeeded. A refusal (a 4xx other than 421: a stale step, an
        overflowing sum) is raised as the service's error, as the front would answer it;
        anything else (a shard down, moved, an old map) returns False: the map is forgotten
        (the front's reply brings the new one) and the request goes to the front."""
        if all(_ok(reply) for reply in replies):
            return True
        trouble = [reply for reply in replies if not isinstance(reply, RESPONSE_TYPES)
                   or reply.status_code >= 500 or reply.status_code == 421]
        if not trouble:
            raise failure(next(reply for reply in replies  # type: ignore[arg-type]
                               if not _ok(reply)))
        self.maps.pop(shard_map.table, None)
        for (_, url, _), reply in zip(calls, replies, strict=True):
            if isinstance(reply, httpx.ConnectError | httpx.ConnectTimeout):
                self.unreachable.mark(url)
        return False

    # -- the requests ---------------------------------------------------------------------
    def lookup_calls(self, shard_map: ShardMap, ids: Any
                     ) -> tuple[Split, np.ndarray, list[tuple[int, str, Call[Any]]]] | None:
        id_array = np.asarray(ids)
        if id_array.size == 0 or not shard_map.takes_ids(id_array):
            return None
        where, bodies = lookup_parts(id_array, shard_map.shards)
        path = f"/v1/tables/{quote(shard_map.table, safe='')}/lookup"
        calls = [(shard, shard_map.urls[shard],
                  Call("POST", path, _identity, body,
                       {"Content-Type": NPY, "Accept": NPY, **shard_map.header(shard)}))
                 for shard, body in bodies.items()]
        return where, id_array, calls

    def lookup_result(self, shard_map: ShardMap, where: Split, id_array: np.ndarray,
                      calls: list[tuple[int, str, Call[Any]]],
                      replies: list[AnyResponse | Exception]) -> Lookup | None:
        if not self.succeeded(shard_map, calls, replies):
            return None
        rows = {shard: npy.read(reply.content, field="the reply")[0]  # type: ignore[union-attr]
                for (shard, _, _), reply in zip(calls, replies, strict=True)}
        steps = [int(reply.headers["x-table-step"]) for reply in replies]  # type: ignore
        vectors = merge_lookup(where, id_array.shape, rows, shard_map.embedding_dim,
                               shard_map.dtype)
        return Lookup(vectors, min(steps))

    def push_calls(self, shard_map: ShardMap, call: Call[Any], ids: Any, grads: Any,
                   via_leader: bool) -> list[tuple[int, str, Call[Any]]] | None:
        """The parts of a push (or the whole of it, to the leader, when it steps the table or
        checks staleness), with the push's Idempotency-Key."""
        id_array, grad_array = np.asarray(ids), np.asarray(grads)
        if not shard_map.takes_push(id_array, grad_array):
            return None
        key = {name: value for name, value in (call.headers or {}).items()
               if name == "Idempotency-Key"}
        if via_leader:
            return [(0, shard_map.urls[0], Call(call.method, call.path, _identity, call.content,
                                                {**(call.headers or {}), **shard_map.header(0)},
                                                call.params))]
        bodies = push_parts(id_array, grad_array, shard_map.shards, shard_map.embedding_dim)
        return [(shard, shard_map.urls[shard],
                 Call("POST", call.path, _identity, body,
                      {"Content-Type": NPY, "Accept": JSON, **key, **shard_map.header(shard)}))
                for shard, body in enumerate(bodies)]

    def push_result(self, shard_map: ShardMap, calls: list[tuple[int, str, Call[Any]]],
                    replies: list[AnyResponse | Exception]) -> PushResult | None:
        if not self.succeeded(shard_map, calls, replies):
            return None
        answers = [orjson.loads(reply.content) for reply in replies]  # type: ignore[union-attr]
        replayed = all(reply.headers.get("idempotent-replayed") == "true"  # type: ignore
                       for reply in replies)
        return PushResult.from_json(merge_push_replies(answers), replayed)

    def leader_call(self, shard_map: ShardMap, call: Call[Any]
                    ) -> list[tuple[int, str, Call[Any]]]:
        return [(0, shard_map.urls[0], Call(call.method, call.path, _identity, call.content,
                                            {**(call.headers or {}), **shard_map.header(0)},
                                            call.params))]

    def apply_result(self, shard_map: ShardMap, calls: list[tuple[int, str, Call[Any]]],
                     replies: list[AnyResponse | Exception]) -> ApplyResult | None:
        if not self.succeeded(shard_map, calls, replies):
            return None
        reply = replies[0]
        assert isinstance(reply, RESPONSE_TYPES)
        return ApplyResult.from_json(orjson.loads(reply.content),
                                     reply.headers.get("idempotent-replayed") == "true")
