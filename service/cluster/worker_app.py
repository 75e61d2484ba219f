"""The HTTP side of a shard server: the binary fast path for its shard, and the leader's routes.

Each shard server (service.cluster.worker) serves one shard of one table on a port of its own,
so that the SDK (and the fronts) send each id straight to the shard that holds it:

    POST /v1/tables/{name}/lookup      .npy ids of this shard -> .npy rows (X-Table-Step)
    POST /v1/tables/{name}/gradients   .npy pair / .npz: this shard's part of a push; on shard 0
                                       also a whole push with apply=true or step (the leader)
    POST /v1/tables/{name}/apply       shard 0 only: a step of the whole table
    POST /internal/v1/tables/{name}/<operation>   the leader's two-phase rounds (leader.py)
    GET  /healthz

Lookups go through the API's own handler (service.api.handlers.lookup), so a shard answers the
same bytes, errors and limits as a single-process service. Every request names its shard with
`X-Shard: <generation>/<shard>`; one meant for another (an old map, a table made again) gets
421 shard_map_changed, and one that arrives while the shard is being restored 503 with
Retry-After. The token and the body limit are the service's own middleware.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import numpy as np
import orjson
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api import codecs, handlers
from service.api.codecs import JSON, NPY, NPZ
from service.api.errors import service_error_reply, validate_model
from service.api.handlers import Exchange
from service.api.middleware.auth import BearerAuth
from service.api.middleware.fast_path import read_into_buffer
from service.api.middleware.limits import BodyLimits, BodyTooLarge, too_large
from service.api.middleware.routes import DEFAULT_POLICY
from service.api.negotiation import format_of_content_type
from service.api.schemas import ApplyRequest
from service.api.settings import Settings
from service.client._routing import merge_push_replies, push_parts
from service.cluster.journal import fingerprint
from service.cluster.leader import Leader, failure_of
from service.cluster.peers import SHARD_HEADER
from service.cluster.shard import ShardTable
from service.core import checks
from service.core.errors import (
    EmbeddingServiceError,
    InvalidRequest,
    ShardMapChanged,
    ShardUnavailable,
)

ROUTE = re.compile(r"/(?P<internal>internal/)?v1/tables/(?P<name>[^/]+)/(?P<operation>[a-z_]+)")
PART = "gradients#part"  # the journal's name for a part of a push the leader split


@dataclass
class RowCounts:
    """Rows served by this shard server, for the fronts' /metrics (AppMetrics.count_rows's
    interface, which the API's handlers call)."""

    looked_up: int = 0
    pushed: int = 0
    updated: int = 0

    def count_rows(self, table: Any, *, looked_up: int = 0, pushed: int = 0,
                   updated: int = 0) -> None:
        self.looked_up += looked_up
        self.pushed += pushed
        self.updated += updated


@dataclass
class Hosted:
    """What the server holds: set by the shard server as it is assigned, restored, released."""

    shard: ShardTable | None = None
    leader: Leader | None = None
    generation: str = ""
    shard_number: int = -1
    ready: bool = False
    counts: RowCounts = field(default_factory=RowCounts)

    def get(self, name: str) -> ShardTable:
        """The registry interface the API's lookup handler asks (one table: this shard)."""
        if self.shard is None or self.shard.name != name:
            raise ShardMapChanged(f"this shard server holds no shard of table {name!r}")
        return self.shard


def reply_of(error: EmbeddingServiceError) -> Response:
    headers = {}
    if isinstance(error, ShardUnavailable):
        headers["Retry-After"] = str(error.retry_after_seconds)
    return service_error_reply(error, headers)


class WorkerApp:
    """The shard server's ASGI app: the service's token check and body limits (its middleware's
    own pieces), then the routes above."""

    def __init__(self, hosted: Hosted, settings: Settings) -> None:
        self.hosted = hosted
        self.settings = settings
        token = settings.token
        self.auth = BearerAuth(token.get_secret_value()) if token is not None else None
        self.limits = BodyLimits(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/healthz":
            await JSONResponse({"status": "ok", "ready": self.hosted.ready})(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self.auth.refusal(headers) if self.auth is not None else None
        if refusal is None:
            refusal, length = self.limits.refusal(headers, DEFAULT_POLICY)
            if length is None:
                receive = self.limits.counting(receive, DEFAULT_POLICY)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        match = ROUTE.fullmatch(scope["path"])
        try:
            if match is None or scope["method"] != "POST":
                raise ShardMapChanged(f"{scope['method']} {scope['path']} is not served by a "
                                      "shard server")
            shard = self.check_shard(scope, match["name"])
            reply = await self.dispatch(scope, receive, shard, match["operation"],
                                        bool(match["internal"]))
        except EmbeddingServiceError as error:
            reply = reply_of(error)
        except BodyTooLarge as error:
            reply = too_large(error.detail)
        await reply(scope, receive, send)

    def check_shard(self, scope: Scope, name: str) -> ShardTable:
        """The shard the request names (X-Shard), if this server holds it and is ready."""
        wanted = header(scope, SHARD_HEADER.lower().encode())
        hosted = self.hosted
        if wanted != f"{hosted.generation}/{hosted.shard_number}" or hosted.shard is None \
                or hosted.shard.name != name:
            raise ShardMapChanged(f"this server does not hold shard {wanted or '?'} of table "
                                  f"{name!r}: ask a front for the table's shards again")
        if not hosted.ready:
            raise ShardUnavailable(f"shard {hosted.shard_number} of table {name!r} is being "
                                   "restored from its snapshot; retry shortly")
        return hosted.shard

    async def dispatch(self, scope: Scope, receive: Receive, shard: ShardTable, operation: str,
                       internal: bool) -> Response:
        exchange = Exchange(
            shard.name, header(scope, b"content-type"), header(scope, b"accept"),
            scope.get("query_string", b""),
            lambda: read_into_buffer(receive, None), scope, self.hosted,  # type: ignore[arg-type]
            self.settings, self.hosted.counts,  # type: ignore[arg-type]
        )
        if internal:
            return await self.internal(exchange, shard, operation)
        if operation == "lookup":
            return await handlers.lookup(exchange)
        if operation == "gradients":
            return await self.push(exchange, shard)
        if operation == "apply":
            return await self.apply(exchange, shard)
        raise ShardMapChanged(f"{operation!r} is not an operation of a shard server")

    # -- pushes ----------------------------------------------------------------------------
    async def push(self, exchange: Exchange, shard: ShardTable) -> Response:
        body = bytes(await exchange.read_body())
        fmt = format_of_content_type(exchange.content_type, NPZ, NPY)
        if fmt == NPZ:
            arrays = codecs.parse_npz(body, ("ids", "grads"), self.settings.max_body_bytes)
            ids, grads = arrays["ids"], arrays["grads"]
        elif fmt == NPY:
            ids, grads = codecs.parse_npy_pair(body, "ids", "grads")
        else:
            raise InvalidRequest("a shard server takes .npy or .npz pushes; send JSON to a "
                                 "front")
        apply, step = handlers.query_flag(exchange, "apply"), handlers.query_int(exchange, "step")
        handlers.check_count(ids, self.settings)
        work = handlers.check_rows_bytes("push", ids, shard, self.settings)  # type: ignore
        handlers.check_grads_fit(grads, shard.dtype)
        key = self.journal_key(exchange, "gradients")
        print_ = fingerprint("gradients", exchange.query_string, exchange.content_type, body)
        if apply or step is not None:
            reply = await self.leader_push(exchange, shard, ids, grads, apply, step, key, print_)
        else:
            reply, replayed = await handlers.run_numeric(
                exchange, work, local_push, shard, ids, grads, None, key, print_)
            if replayed:
                return Response(reply, media_type=JSON,
                                headers={"Idempotent-Replayed": "true"})
        self.hosted.counts.count_rows(shard, pushed=int(ids.size))
        return Response(reply, media_type=JSON)

    async def leader_push(self, exchange: Exchange, shard: ShardTable, ids: np.ndarray,
                          grads: np.ndarray, apply: bool, step: int | None,
                          key: tuple[str, str, str, str] | None, print_: bytes) -> bytes:
        leader = self.leader_of(shard)
        replay: bytes | None = shard.journal.replay(key, print_, "push")
        if replay is not None:
            return replay
        checks.check_whole_push(ids, grads, step, shard.embedding_dim, shard.check_ids)
        if apply:
            reply = orjson.dumps(await leader.push_now(ids, grads, step))
        else:
            async with leader.between_steps(step):
                reply = orjson.dumps(await fan_out_push(leader, ids, grads, step, exchange))
        with shard.locked():
            shard.journal.record(key, print_, 200, reply)
        return reply

    async def apply(self, exchange: Exchange, shard: ShardTable) -> Response:
        leader = self.leader_of(shard)
        body = bytes(await exchange.read_body())
        options = ApplyRequest()
        if body.strip():
            options = validate_model(ApplyRequest, codecs.parse_json_object(body))
        key = self.journal_key(exchange, "apply")
        print_ = fingerprint("apply", exchange.query_string, exchange.content_type, body)
        replay = shard.journal.replay(key, print_, "apply")
        if replay is not None:
            return Response(replay, media_type=JSON, headers={"Idempotent-Replayed": "true"})
        result = await leader.apply(options.lr, options.average)
        reply = orjson.dumps(result)
        with shard.locked():
            shard.journal.record(key, print_, 200, reply)
        self.hosted.counts.count_rows(shard, updated=result["rows_updated"])
        return Response(reply, media_type=JSON)

    def leader_of(self, shard: ShardTable) -> Leader:
        if self.hosted.leader is None:
            raise ShardMapChanged(f"shard {shard.place.shard} of table {shard.name!r} is not "
                                  "its leader: applies and pushes with apply or step go to "
                                  "shard 0")
        return self.hosted.leader

    @staticmethod
    def journal_key(exchange: Exchange, operation: str) -> tuple[str, str, str, str] | None:
        key = header(exchange.scope, b"idempotency-key")
        if not key:
            return None
        credentials = header(exchange.scope, b"authorization").encode("latin-1")
        digest = hashlib.sha256(credentials).hexdigest() if credentials else ""
        return ("POST", f"/v1/tables/{exchange.name}/{operation}", key, digest)

    # -- the leader's rounds -----------------------------------------------------------------
    async def internal(self, exchange: Exchange, shard: ShardTable, operation: str) -> Response:
        body = bytes(await exchange.read_body())
        if operation == "push":  # a part of a push the leader split (it carries `step`)
            ids, grads = codecs.parse_npy_pair(body, "ids", "grads")
            key = self.journal_key(exchange, PART)
            print_ = fingerprint(PART, exchange.query_string, exchange.content_type, body)
            reply_bytes, _ = local_push(shard, ids, grads, handlers.query_int(exchange, "step"),
                                        key, print_)
            return Response(reply_bytes, media_type=JSON)
        if operation == "prepare":
            ids, grads = codecs.parse_npy_pair(body, "ids", "grads")
            reply: Any = shard.prepare_push(
                exchange.query("txn") or "", int(exchange.query("step") or 0),
                float(exchange.query("lr") or 0), ids, grads)
            return Response(orjson.dumps(reply), media_type=JSON)
        fields = orjson.loads(body) if body else {}
        txn = str(fields.get("txn", ""))
        if operation == "seal":
            reply = shard.seal(txn, int(fields["step"]), float(fields["lr"]),
                               bool(fields["check"]))
        elif operation == "divide":
            shard.divide(txn, int(fields["divisor"]))
            reply = None
        elif operation == "commit":
            reply = shard.commit(txn, int(fields["step"]))
        elif operation in ("abort", "release"):
            reply = getattr(shard, operation)(txn)
        elif operation == "status":
            reply = shard.stats()
        elif operation == "capture":
            reply = shard.snapshot_capture()
        elif operation == "swap":
            reply = shard.swap_weights(str(fields["token"]))
        elif operation == "candidates":  # a dynamic table's eviction by capacity
            reply = shard.eviction_candidates(int(fields["count"]))
        elif operation == "evict":
            reply = shard.evict_keys(np.asarray(fields["keys"], dtype=np.int64))
        else:
            raise ShardMapChanged(f"{operation!r} is not an internal operation")
        return Response(orjson.dumps(reply), media_type=JSON)


def local_push(shard: ShardTable, ids: np.ndarray, grads: np.ndarray, step: int | None,
               key: tuple[str, str, str, str] | None, print_: bytes,
               wait: bool = True) -> tuple[bytes, bool]:
    """This shard's part of a push, with its journal entry, as one instant; (reply, whether
    it is a replay of the first). Shard 0 counts the push (every push sends it a part)."""
    with shard.locked(wait):
        replay = shard.journal.replay(key, print_, "push")
        if replay is not None:
            return replay, True
        reply = orjson.dumps(shard.push(ids, grads, counted=shard.place.shard == 0, step=step))
        shard.journal.record(key, print_, 200, reply)
        return reply, False


async def fan_out_push(leader: Leader, ids: np.ndarray, grads: np.ndarray, step: int | None,
                       exchange: Exchange) -> dict[str, Any]:
    """A whole push split over the table's shards by the leader (a push that carries `step`),
    each part under the caller's Idempotency-Key (journalled as a part: PART)."""
    shard = leader.shard
    parts = push_parts(ids, grads, shard.place.shards, shard.embedding_dim)
    query = {"step": str(step)} if step is not None else {}
    key_header = header(exchange.scope, b"idempotency-key")
    headers = {"Idempotency-Key": key_header} if key_header else {}
    key = WorkerApp.journal_key(exchange, PART)

    def mine() -> dict[str, Any]:
        part_ids, part_grads = codecs.parse_npy_pair(parts[0], "ids", "grads")
        print_ = fingerprint(PART, urlencode(query).encode(), NPY, parts[0])
        return dict(orjson.loads(local_push(shard, part_ids, part_grads, step, key, print_)[0]))

    results = await leader.round(mine, "push", per_shard=lambda k: {
        "body": parts[k], "query": query, "headers": headers})
    failure = failure_of(results)
    if failure is not None:
        raise failure
    return merge_push_replies(results)


def header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def worker_app(hosted: Hosted, settings: Settings) -> ASGIApp:
    return WorkerApp(hosted, settings)
