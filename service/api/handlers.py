"""The lookup and gradient-push handlers, shared by the FastAPI routes (the documented API,
service.api.routes.operations) and the binary fast path (service.api.middleware): both hand a
request to the same code here, so both give the same reply to the same request, byte for byte.

Binary bodies skip pydantic and JSON entirely: .npy bytes are read with np.frombuffer (no copy)
and the reply rows are gathered straight into the reply buffer. Small operations run right on
the event loop when their table is free: a hop to the thread pool, with its GIL hand-offs,
costs more than gathering 4096 rows (docs/performance.md has the figures). "Small" is counted
in bytes of rows (inline_max_bytes), not ids: 8 ids of dim 65536 are as much work as 8192 of
dim 64. Larger ones, or any that would wait for the table's lock, run in the thread pool (numpy
releases the GIL), so the loop keeps serving. The bytes of rows a request would make the
service hold (the reply of a lookup, the gradient of a push, the text of a JSON reply) are
checked against max_rows_bytes before anything is allocated.

    reply = await handlers.lookup(Exchange.of_request(request, name, tables, settings))
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from service.api import codecs
from service.api.codecs import JSON, NPY, NPZ
from service.api.errors import PayloadTooLarge
from service.api.metrics import AppMetrics
from service.api.negotiation import format_of_accept, format_of_content_type
from service.api.row_stream import RowStream
from service.api.settings import Settings
from service.core.errors import InvalidRequest
from service.core.locking import TableBusy
from service.core.registry import TableRegistry
from service.core.table_base import Table

Result = TypeVar("Result")


@dataclass(slots=True)
class Exchange:
    """One request as the handlers see it, however it arrived (FastAPI route or fast path)."""

    name: str  # the table, from the path
    content_type: str  # the Content-Type header as sent ("" without one)
    accept: str  # the Accept header as sent ("" without one)
    query_string: bytes
    read_body: Callable[[], Awaitable[bytes | memoryview]]  # memoryview: the fast path's buffer
    scope: MutableMapping[str, Any]  # the access log's fields go to scope["embed.log"]
    registry: TableRegistry
    settings: Settings
    metrics: AppMetrics

    @classmethod
    def of_request(
        cls, request: Request, name: str, registry: TableRegistry, settings: Settings
    ) -> Exchange:
        return cls(
            name, request.headers.get("content-type", ""), request.headers.get("accept", ""),
            request.scope.get("query_string", b""), request.body, request.scope, registry,
            settings, request.app.state.metrics,
        )

    def query(self, name: str) -> str | None:
        return QueryParams(self.query_string).get(name) if self.query_string else None

    def note(self, table: Table, rows: int, **counts: int) -> None:
        """What the access log (table, rows) and the row counters (counts) get."""
        self.scope.setdefault("embed.log", {}).update(table=table.name, rows=rows)
        if counts:
            self.metrics.count_rows(table, **counts)


async def run_numeric(
    exchange: Exchange, work_bytes: int, operation: Callable[..., Result], *args: Any,
    **kwargs: Any,
) -> Result:
    """operation(*args, **kwargs), a table method taking wait=: on the loop when its bytes of
    rows are few (inline_max_bytes) and the table is free, else in the thread pool."""
    if work_bytes <= exchange.settings.inline_max_bytes:
        try:
            return operation(*args, wait=False, **kwargs)
        except TableBusy:  # raised before anything changed: run it where waiting is fine
            pass
    return await run_in_threadpool(operation, *args, **kwargs)


OFF_LOOP_BYTES = 1 << 16  # JSON and .npz work on more than this runs in the thread pool


async def off_loop(size: int, work: Callable[..., Result], *args: Any) -> Result:
    """work(*args) inline when `size` (bytes to decode or values to encode) is small, else in
    the thread pool: decoding a large JSON or .npz body, or encoding a large JSON reply, takes
    milliseconds, and the event loop keeps serving other requests meanwhile."""
    if size <= OFF_LOOP_BYTES:
        return work(*args)
    return await run_in_threadpool(work, *args)


def json_ids(value: Any, table: Table, settings: Settings) -> np.ndarray:
    """A request's JSON ids: row numbers (int64, or uint64 to be refused by the range check),
    or for a table whose ids are keys any integer in [-2**63, 2**64) as int64 keys."""
    if table.ids_are_keys:
        return codecs.json_keys(value, "ids", settings.max_json_depth)
    return codecs.json_array(value, "ids", "iu", settings.max_json_depth)


def parse_json_lookup(body: bytes, settings: Settings, table: Table) -> np.ndarray:
    fields = codecs.parse_json_object(body)
    codecs.reject_unknown_fields(fields, {"ids"})
    return json_ids(fields.get("ids"), table, settings)


def parse_json_push(
    body: bytes, settings: Settings, table: Table
) -> tuple[np.ndarray, np.ndarray, bool, int | None]:
    """ids, grads, apply and step of a JSON push."""
    embedding_dim = table.embedding_dim
    fields = codecs.parse_json_object(body)
    codecs.reject_unknown_fields(fields, {"ids", "grads", "apply", "step"})
    ids = json_ids(fields.get("ids"), table, settings)
    grads = codecs.json_array(fields.get("grads"), "grads", "iuf", settings.max_json_depth + 1)
    apply, step = fields.get("apply", False), fields.get("step")
    if type(apply) is not bool:
        raise InvalidRequest(f"apply must be true or false, got {apply!r}")
    if step is not None and type(step) is not int:
        raise InvalidRequest(f"step must be an integer, got {step!r}")
    if ids.size == 0 and grads.size == 0:  # JSON cannot say (0, dim): [] means no rows
        grads = grads.reshape(*ids.shape, embedding_dim)
    return ids, grads, apply, step


def check_count(ids: np.ndarray, settings: Settings) -> None:
    limit = settings.max_ids_per_request
    if ids.size > limit:
        raise PayloadTooLarge(f"ids has {ids.size} entries, more than max_ids_per_request={limit}")
    if ids.ndim and max(ids.shape) > limit:  # (10**9, 0) holds no id but a JSON reply of 10**9 []
        raise PayloadTooLarge(
            f"ids has shape {list(ids.shape)}, a dimension over max_ids_per_request={limit}"
        )


def check_rows_bytes(operation: str, ids: np.ndarray, table: Table,
                     settings: Settings) -> int:
    """The bytes of rows the request makes the service hold (ids x embedding_dim x itemsize);
    413 over max_rows_bytes."""
    itemsize, dim = table.dtype.itemsize, table.embedding_dim
    total = ids.size * dim * itemsize
    if total > settings.max_rows_bytes:
        raise PayloadTooLarge(
            f"a {operation} of {ids.size} ids x embedding_dim {dim} x {itemsize} bytes "
            f"({table.dtype.name}) is {total} bytes of rows, more than "
            f"max_rows_bytes={settings.max_rows_bytes}"
        )
    return total


# The longest number orjson writes for a float32 / float64 ("-0.0000012345679",
# "-2.2250738585072014e-308"), and the envelope {"shape": [...], "step": n, "vectors": ...}.
JSON_NUMBER_CHARS = {4: 17, 8: 24}
JSON_ENVELOPE_CHARS = 64


def json_reply_bytes(id_shape: tuple[int, ...], dim: int, dtype: np.dtype) -> int:
    """An upper bound of a JSON lookup reply's length: every number at its longest plus a
    comma, and "[", "]" and a comma for every list of the nesting."""
    shape = (*id_shape, dim)
    lists = sum(math.prod(shape[:depth]) for depth in range(len(shape)))
    numbers = math.prod(shape) * (JSON_NUMBER_CHARS[dtype.itemsize] + 1)
    return numbers + 3 * lists + JSON_ENVELOPE_CHARS + 21 * len(shape)


def check_json_reply(ids: np.ndarray, table: Table, settings: Settings) -> None:
    size = json_reply_bytes(ids.shape, table.embedding_dim, table.dtype)
    if size > settings.max_rows_bytes:
        raise PayloadTooLarge(
            f"a JSON reply of {ids.size} ids x embedding_dim {table.embedding_dim} "
            f"{table.dtype.name} may take {size} bytes, more than "
            f"max_rows_bytes={settings.max_rows_bytes}; ask for Accept: {NPY} "
            f"({table.dtype.itemsize} bytes a number)"
        )


def check_grads_fit(grads: np.ndarray, dtype: np.dtype) -> None:
    """Refuse gradients that would overflow to infinity when cast to the table's dtype
    (1e300 is finite in float64, inf in float32)."""
    if grads.dtype.kind != "f" or grads.dtype.itemsize <= dtype.itemsize or grads.size == 0:
        return
    largest = float(np.finfo(dtype).max)
    high, low = float(grads.max()), float(grads.min())
    if high > largest or low < -largest:
        raise InvalidRequest(
            f"grads must fit in the table's {dtype.name} (|g| <= {largest:.4g}), "
            f"got {high if high > largest else low:.4g}"
        )


def query_flag(exchange: Exchange, name: str) -> bool:
    value = exchange.query(name)
    if value is None:
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise InvalidRequest(f"query parameter {name} must be true or false, got {value!r}")


def query_int(exchange: Exchange, name: str) -> int | None:
    value = exchange.query(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidRequest(f"query parameter {name} must be an integer, got {value!r}") from None


async def lookup(exchange: Exchange) -> Response:
    """W[ids] for an id, or an n-dimensional array of ids, as JSON or .npy."""
    settings = exchange.settings
    table = exchange.registry.get(exchange.name)
    body = await exchange.read_body()
    fmt = format_of_content_type(exchange.content_type, NPY)
    out_fmt = format_of_accept(exchange.accept, fmt)
    if fmt == NPY:
        ids = codecs.parse_npy(body, "ids")
    else:
        ids = await off_loop(len(body), parse_json_lookup, body, settings, table)
    check_count(ids, settings)
    exchange.note(table, ids.size)
    work = check_rows_bytes("lookup", ids, table, settings)
    shape = (*ids.shape, table.embedding_dim)
    if out_fmt == NPY:
        buffer, rows = codecs.npy_reply_buffer(table.dtype, shape)
        if work > settings.inline_max_bytes:  # sent while its rows are read (row_stream)
            streamed = await RowStream.start(table, ids, buffer, rows)
            exchange.note(table, ids.size, looked_up=ids.size)
            return streamed
        _, step = await run_numeric(exchange, work, table.lookup, ids, rows)
        exchange.note(table, ids.size, looked_up=ids.size)
        return Response(buffer.data, media_type=NPY, headers={"X-Table-Step": str(step)})
    check_json_reply(ids, table, settings)
    rows, step = await run_numeric(exchange, work, table.lookup, ids)
    exchange.note(table, ids.size, looked_up=ids.size)
    body_out = await off_loop(rows.size, codecs.dumps,
                              {"shape": list(shape), "step": step, "vectors": rows})
    return Response(body_out, media_type=JSON, headers={"X-Table-Step": str(step)})


async def push(exchange: Exchange) -> Response:
    """Add grads into the pending gradient of rows ids (duplicate ids sum, as np.add.at).
    JSON {"ids", "grads", "apply", "step"}; an .npz holding ids and grads; or ids.npy and
    grads.npy back to back (.npy). Binary bodies take apply and step as query parameters."""
    settings = exchange.settings
    table = exchange.registry.get(exchange.name)
    body = await exchange.read_body()
    fmt = format_of_content_type(exchange.content_type, NPZ, NPY)
    if fmt == JSON:
        ids, grads, apply, step = await off_loop(len(body), parse_json_push, body, settings,
                                                 table)
    else:
        if fmt == NPZ:
            arrays = await off_loop(
                len(body), codecs.parse_npz, body, ("ids", "grads"), settings.max_body_bytes
            )
            ids, grads = arrays["ids"], arrays["grads"]
        else:
            ids, grads = codecs.parse_npy_pair(body, "ids", "grads")
        apply, step = query_flag(exchange, "apply"), query_int(exchange, "step")
    check_count(ids, settings)
    exchange.note(table, ids.size)
    work = check_rows_bytes("push", ids, table, settings)
    check_grads_fit(grads, table.dtype)
    result = await run_numeric(exchange, work, table.push, ids, grads, apply=apply, step=step)
    exchange.note(table, ids.size, pushed=ids.size, updated=result.rows_updated)
    reply = {"rows": result.rows, "pending_rows": result.pending_rows, "step": result.step,
             "rows_updated": result.rows_updated}
    if result.dropped_rows is not None:  # tables that admit keys say what they dropped
        reply["dropped_rows"] = result.dropped_rows
    return Response(codecs.dumps(reply), media_type=JSON)
