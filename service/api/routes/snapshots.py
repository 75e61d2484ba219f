"""Durability over HTTP: take a snapshot now, export and import a table's whole weights."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.api import codecs
from service.api.codecs import JSON, NPY
from service.api.deps import SettingsDep, TablesDep
from service.api.durability import take_snapshot
from service.api.errors import NotAcceptable, UnsupportedMediaType
from service.api.middleware.routes import route_policy
from service.api.negotiation import reply_format
from service.api.schemas import ErrorReply, SnapshotReply, SnapshotTable, TableInfo, WeightsJson
from service.api.weights_io import NpyReceiver, check_finite, npy_chunks
from service.core.errors import InvalidRequest

router = APIRouter(tags=["snapshots"])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorReply} for code in (404, 406, 413, 415, 422)
}
NPY_CONTENT = {"schema": {"type": "string", "format": "binary"}}


@router.post("/v1/snapshots", responses={503: {"model": ErrorReply}})
async def snapshot(request: Request) -> SnapshotReply:
    """Write every table that changed since its last snapshot to the data directory (crash-safe:
    the previous snapshot stays until the new one is complete). Other requests keep being served
    meanwhile. 503 if the disk refuses."""
    report = await take_snapshot(request.app, "request")
    return SnapshotReply(
        tables=[SnapshotTable(name=t.name, step=t.step, bytes=t.bytes, seconds=t.seconds)
                for t in report.written],
        unchanged=report.unchanged,
        bytes=report.bytes,
        seconds=report.seconds,
    )


@router.get(
    "/v1/tables/{name}/weights",
    response_model=None,
    responses={**ERRORS, 200: {"description": "The whole (num_embeddings, embedding_dim) matrix.",
                               "content": {NPY: NPY_CONTENT,
                                           JSON: {"schema": WeightsJson.model_json_schema()}}}},
)
async def export_weights(
    name: str, request: Request, tables: TablesDep, settings: SettingsDep
) -> Response:
    """The table's weights as one .npy, streamed (default), or as JSON {"shape", "vectors"} with
    `Accept: application/json` for tables up to max_json_weights_bytes. Header X-Table-Step:
    the step when the export began."""
    table = tables.get(name)
    fmt = reply_format(request, NPY, offered=(NPY, JSON))
    headers = {"X-Table-Step": str(table.step)}
    if fmt == JSON:
        if table.weights.nbytes > settings.max_json_weights_bytes:
            raise NotAcceptable(
                f"table {name!r} has {table.weights.nbytes} bytes of weights, more than "
                f"max_json_weights_bytes={settings.max_json_weights_bytes} for JSON; ask for "
                f"Accept: {NPY}"
            )
        vectors, step = await run_in_threadpool(table.lookup, np.arange(table.num_embeddings))
        body = codecs.dumps({"shape": list(vectors.shape), "vectors": vectors})
        return Response(body, media_type=JSON, headers={"X-Table-Step": str(step)})
    length, pieces = npy_chunks(table)
    headers["Content-Length"] = str(length)
    headers["Content-Disposition"] = f'attachment; filename="{name}.npy"'
    return StreamingResponse(pieces, media_type=NPY, headers=headers)


@router.put(
    "/v1/tables/{name}/weights",
    responses={**ERRORS},
    openapi_extra={"requestBody": {"required": True, "content": {NPY: NPY_CONTENT}}},
)
@route_policy(body_limit="max_weights_body_bytes")  # a whole table: not max_body_bytes
async def import_weights(
    name: str, request: Request, response: Response, tables: TablesDep
) -> TableInfo:
    """Replace the table's weights with an .npy of exactly its shape and dtype, in one step
    (lookups see the old or the new matrix, never a mix). 422 on any mismatch, table unchanged.
    The pending gradient (computed on the old weights) is dropped; the optimizer state and the
    step are kept. Header X-Pending-Rows-Dropped."""
    table = tables.get(name)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != NPY:
        raise UnsupportedMediaType(
            f"Content-Type {content_type!r} is not supported here; send {NPY!r} (np.save's bytes)"
        )
    receiver = NpyReceiver(table.weights.shape, table.dtype, f"table {name!r}")
    problem: InvalidRequest | None = None
    async for piece in request.stream():
        if problem is None:
            try:
                receiver.feed(piece)
            except InvalidRequest as error:
                problem = error  # read on to the end, so the client sees the reply
    if problem is not None:
        raise problem
    weights = receiver.finish()
    await run_in_threadpool(check_finite, weights)
    dropped = await run_in_threadpool(table.replace_weights, weights)
    response.headers["X-Pending-Rows-Dropped"] = str(dropped)
    return TableInfo(**table.info())
