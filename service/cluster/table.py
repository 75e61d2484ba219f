"""A sharded table as a front sees it: the table interface of the API layer, over its shards.

ClusterTable offers what service.api's routes and handlers use of a table (service.core's
EmbeddingTable offers the same), so they serve a cluster-mode table without knowing it:

- lookup and push split the ids by shard and send the parts to the shards' servers at once
  (service.client._routing, the SDK's own functions: a part is the same bytes whichever sends
  it), over HTTP; apply, and pushes with apply or step, go whole to shard 0, the leader;
- a request is checked whole first, with the core's checks, so a refusal is the single-process
  service's and no shard changes;
- a shard that does not answer (restarting, moved) makes the front ask the catalog for the map
  again and try once more; then the request fails with 503 Retry-After (the SDK retries);
- info, labels and weights go to the shard servers as Ray calls.

The operations block on the network: with wait=False they raise TableBusy at once, as a busy
core table does, so the API runs them in its thread pool.
"""

from __future__ import annotations

import contextvars
import time
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from service.api.errors import error_classes
from service.client._routing import ShardMap, merge_lookup, merge_push_replies, push_parts
from service.client._wire import RESPONSE_TYPES, AnyResponse, Call
from service.cluster.placement import Place, TableSpec, own_ids
from service.cluster.runtime import result
from service.cluster.table_views import ClusterLabels, ClusterRows, KeyedClusterRows
from service.core import checks
from service.core.dynamic.spec import check_spec
from service.core.dynamic.table import check_rows_to_set, keys_of
from service.core.errors import (
    EmbeddingServiceError,
    InvalidRequest,
    ShardUnavailable,
)
from service.core.initializers import InitSpec
from service.core.locking import TableBusy
from service.core.optimizers import make_optimizer
from service.core.table import DTYPES, ApplyResult, PushResult
from service.sharding import split

if TYPE_CHECKING:
    from service.cluster.front import ClusterRegistry

# The Idempotency-Key of the request being served (set by the front's middleware): the parts
# of a push carry it to the shards, so a retry through any front or the SDK counts once.
request_key: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_key",
                                                                          default=None)
STATS_SECONDS = 0.5  # /metrics reads a table's bytes and pending rows at most this often


def _identity(response: AnyResponse) -> AnyResponse:
    return response


def relayed(code: str, detail: str) -> EmbeddingServiceError:
    """A shard's refusal, to be answered as the front's own (same status, code, sentence)."""
    cls = {each.code: each for each in error_classes()}.get(code, InvalidRequest)
    error = Exception.__new__(cls)
    EmbeddingServiceError.__init__(error, detail)
    return error


class ClusterTable:
    def __init__(self, registry: ClusterRegistry, described: dict[str, Any]) -> None:
        self.registry = registry
        self.spec = TableSpec(**described["spec"])
        # a dynamic table's ids are keys (as DynamicTable's), a fixed one's row numbers
        self.ids_are_keys = self.spec.dynamic is not None
        self.name = self.spec.name
        self.dtype = DTYPES[self.spec.dtype]
        self.embedding_dim = self.spec.embedding_dim
        self.num_embeddings = self.spec.num_embeddings
        self.optimizer = make_optimizer(self.spec.optimizer or {"kind": "sgd"})
        self.init = InitSpec(**(self.spec.init or {"kind": "normal"}))
        self.labels = ClusterLabels(self)
        self._stats: tuple[float, list[dict[str, Any]]] = (0.0, [])
        self.refresh(described)

    def refresh(self, described: dict[str, Any]) -> None:
        self.shards = int(described["shards"])
        self.generation = described["generation"]
        self.version = described["version"]
        self.servers = list(described["servers"])
        settings = self.registry.settings
        self.map = ShardMap(self.name, self.generation, self.version,
                            tuple(url or "" for url in described["urls"]), self.num_embeddings,
                            self.embedding_dim, self.dtype, settings.max_ids_per_request,
                            settings.max_rows_bytes)

    def map_json(self) -> dict[str, Any]:
        return {"generation": self.generation, "version": self.version,
                "urls": list(self.map.urls)}

    # -- figures ------------------------------------------------------------------------------
    def stats(self, fresh: bool = True) -> list[dict[str, Any]]:
        """Each shard server's figures (Ray calls, at once)."""
        taken, found = self._stats
        if fresh or time.monotonic() - taken > STATS_SECONDS:
            handles = [self.registry.server(name) for name in self.servers]
            found = result([handle.stats.remote() for handle in handles], timeout=30)
            self._stats = (time.monotonic(), found)
        return found

    @property
    def step(self) -> int:
        """The table's step now (its leader's; routes put it in X-Table-Step)."""
        leader = self.registry.server(self.servers[0])
        return int(result(leader.stats.remote(), timeout=30).get("step", 0))

    @property
    def pending_rows(self) -> int:
        return sum(int(each.get("pending_rows", 0)) for each in self.stats(fresh=False))

    @property
    def nbytes(self) -> int:
        return sum(int(each.get("nbytes", 0)) for each in self.stats(fresh=False))

    @property
    def live_rows(self) -> int:
        """A dynamic table's rows on every shard (a fixed one: num_embeddings)."""
        return sum(int(each.get("rows", 0)) for each in self.stats())

    def info(self) -> dict[str, Any]:
        found = self.stats()
        more: dict[str, Any] = {}
        if self.spec.dynamic is not None:
            more = {"dynamic": check_spec(self.spec.dynamic).as_dict(),
                    "rows": sum(int(each.get("rows", 0)) for each in found),
                    "evicted_rows": sum(int(each.get("evicted_rows", 0)) for each in found)}
        return {"name": self.name, "num_embeddings": self.num_embeddings,
                "embedding_dim": self.embedding_dim, "dtype": self.dtype.name,
                "init": self.init.as_dict(), "seed": self.spec.seed,
                "optimizer": self.optimizer.config(), "max_staleness": self.spec.max_staleness,
                "step": int(found[0].get("step", 0)),
                "pending_rows": sum(int(each.get("pending_rows", 0)) for each in found),
                "labels": int(found[0].get("labels", 0)),
                "nbytes": sum(int(each.get("nbytes", 0)) for each in found),
                "shards": self.shards, **more}

    def check_ids(self, ids: np.ndarray) -> None:
        if self.num_embeddings is None:  # a dynamic table: any integer is a key
            checks.check_id_kind(ids)
        else:
            checks.check_ids(ids, self.num_embeddings, self.name)

    # -- the three operations -------------------------------------------------------------
    def lookup(self, ids: np.ndarray, out: np.ndarray | None = None, *,
               wait: bool = True) -> tuple[np.ndarray, int]:
        """W[ids] from the shards that hold them, and the lowest step they were read at."""
        if not wait:
            raise TableBusy(self.name)
        self.check_ids(ids)
        where = split(ids, self.shards)
        flat = np.ascontiguousarray(ids).reshape(-1)
        wanted = [shard for shard, positions in enumerate(where.positions) if len(positions)]
        wanted = wanted or [0]  # no id: the step still comes from a shard

        def calls() -> list[tuple[int, Call[Any]]]:
            path = f"/v1/tables/{self.name}/lookup"
            return [(shard, Call("POST", path, _identity, _npy(flat[where.positions[shard]]),
                                 {"Content-Type": "application/x-npy",
                                  "Accept": "application/x-npy", **self.map.header(shard)}))
                    for shard in wanted]

        replies = self.send(calls)
        rows = {shard: _npy_array(reply) for shard, reply in zip(wanted, replies, strict=True)}
        step = min(int(reply.headers["x-table-step"]) for reply in replies)
        found = merge_lookup(where, ids.shape, rows, self.embedding_dim, self.dtype)
        if out is None:
            return found, step
        out[...] = found
        return out, step

    def push(self, ids: np.ndarray, grads: np.ndarray, *, apply: bool = False,
             step: int | None = None, wait: bool = True) -> PushResult:
        """Checked whole as the core checks a push; then its parts to every shard, or the whole
        of it to the leader when it steps the table or carries a step."""
        if not wait:
            raise TableBusy(self.name)
        checks.check_whole_push(ids, grads, step, self.embedding_dim, self.check_ids)
        key = request_key.get() or uuid.uuid4().hex
        path = f"/v1/tables/{self.name}/gradients"
        if apply or step is not None:
            params = {"apply": "true"} if apply else {}
            if step is not None:
                params["step"] = str(step)
            body = _npy(np.asarray(ids), np.asarray(grads))
            reply = self.send(lambda: [(0, Call(
                "POST", path, _identity, body, {"Content-Type": "application/x-npy",
                                                "Accept": "application/json",
                                                "Idempotency-Key": key, **self.map.header(0)},
                params or None))])[0]
            return _push_result(orjson.loads(reply.content))
        bodies = push_parts(ids, grads, self.shards, self.embedding_dim)
        replies = self.send(lambda: [(shard, Call(
            "POST", path, _identity, body, {"Content-Type": "application/x-npy",
                                            "Accept": "application/json",
                                            "Idempotency-Key": key, **self.map.header(shard)}))
            for shard, body in enumerate(bodies)])
        return _push_result(merge_push_replies([orjson.loads(reply.content)
                                                for reply in replies]))

    def apply(self, lr: float | None = None, average: bool = False) -> ApplyResult:
        """One step of the whole table, by its leader (shard 0)."""
        if lr is not None and not (lr > 0 and np.isfinite(lr)):
            raise InvalidRequest(f"lr must be a finite number > 0, got {lr!r}")
        fields: dict[str, Any] = {"average": average}
        if lr is not None:
            fields["lr"] = lr
        key = request_key.get() or uuid.uuid4().hex
        reply = self.send(lambda: [(0, Call(
            "POST", f"/v1/tables/{self.name}/apply", _identity, orjson.dumps(fields),
            {"Content-Type": "application/json", "Accept": "application/json",
             "Idempotency-Key": key, **self.map.header(0)}))])[0]
        done = orjson.loads(reply.content)
        return ApplyResult(int(done["step"]), int(done["rows_updated"]))

    def send(self, calls: Any) -> list[AnyResponse]:
        """Every (shard, call) of `calls()` at once; a shard's refusal raised as the front's
        own; a shard that does not answer: the map asked again once, then ShardUnavailable."""
        for attempt in range(2):
            planned = calls()
            replies = self.registry.send_all([(self.map.urls[shard] or "http://0.0.0.0:9", call)
                                              for shard, call in planned])
            failed = False
            for reply in replies:
                if isinstance(reply, RESPONSE_TYPES) and reply.status_code < 400:
                    continue
                if isinstance(reply, RESPONSE_TYPES) and reply.status_code not in (421, 503) \
                        and reply.status_code < 500:
                    detail = orjson.loads(reply.content).get("detail", "")
                    raise relayed(reply.headers.get("x-error-code", ""), str(detail))
                failed = True
            if not failed:
                return replies  # type: ignore[return-value]
            if attempt == 0:
                self.registry.refresh(self)
        raise ShardUnavailable(f"a shard of table {self.name!r} is not reachable (its server is "
                               "restarting or its node is gone); retry shortly")

    # -- weights ----------------------------------------------------------------------------
    def export_rows(self) -> tuple[np.ndarray, np.ndarray, int]:
        """A dynamic table's (keys ascending, their rows, the step): every shard's live rows
        (Ray calls at once; shards read at slightly different instants if training runs)."""
        handles = [self.registry.server(name) for name in self.servers]
        parts = result([handle.export_rows.remote() for handle in handles], timeout=600)
        keys = np.concatenate([np.asarray(part[0], dtype=np.int64) for part in parts])
        rows = np.concatenate([np.asarray(part[1]).reshape(-1, self.embedding_dim)
                               for part in parts])
        order = np.argsort(keys, kind="stable")
        return keys[order], rows[order], min(int(part[2]) for part in parts)

    def set_rows(self, ids: np.ndarray, weights: np.ndarray) -> int:
        """A dynamic table's import: each shard sets its keys' rows (made where absent), every
        shard's pending gradient dropped, then the leader evicts by capacity; checked here
        whole first, as DynamicTable.set_rows checks."""
        keys = keys_of(ids)  # (n,)
        check_rows_to_set(self.name, self.embedding_dim, self.dtype, keys, weights)
        token = uuid.uuid4().hex
        handles = [self.registry.server(name) for name in self.servers]
        where = split(keys, self.shards)
        result([handle.stage_weights.remote(token, keys[where.positions[shard]],
                                             weights[where.positions[shard]])
                for shard, handle in enumerate(handles)])
        return int(result(handles[0].replace_weights.remote(token)))

    def replace_weights(self, weights: np.ndarray) -> int:
        """Every shard's rows of `weights` at once, between two steps; pending rows dropped."""
        assert self.num_embeddings is not None, "a fixed table's"
        shape = (self.num_embeddings, self.embedding_dim)
        if weights.shape != shape or weights.dtype != self.dtype:
            raise InvalidRequest(
                f"weights must have shape {list(shape)} and dtype {self.dtype} like table "
                f"{self.name!r}, got {list(weights.shape)} {weights.dtype}")
        token = uuid.uuid4().hex
        handles = [self.registry.server(name) for name in self.servers]
        staged = []
        for shard, handle in enumerate(handles):
            ids = own_ids(shape[0], Place(shard, self.shards, self.generation))
            staged.append(handle.stage_weights.remote(token, ids, weights[ids]))
        result(staged)
        return int(result(handles[0].replace_weights.remote(token)))

    def row_view(self) -> ClusterRows:
        return KeyedClusterRows(self) if self.ids_are_keys else ClusterRows(self)


def _npy(*arrays: np.ndarray) -> bytes:
    from service import npy

    return npy.encode(*arrays)


def _npy_array(reply: AnyResponse) -> np.ndarray:
    from service import npy

    return npy.read(reply.content, field="a shard's reply")[0]


def _push_result(reply: dict[str, Any]) -> PushResult:
    dropped = reply.get("dropped_rows")
    return PushResult(int(reply["rows"]), int(reply["pending_rows"]), int(reply["step"]),
                      int(reply.get("rows_updated", 0)),
                      None if dropped is None else int(dropped))
