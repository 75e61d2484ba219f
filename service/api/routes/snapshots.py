"""Durability over HTTP: take a snapshot now, export and import a table's whole weights."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from service.api import weights_io
from service.api.codecs import JSON, NPY, NPZ
from service.api.deps import SettingsDep, TablesDep
from service.api.durability import take_snapshot
from service.api.errors import UnsupportedMediaType
from service.api.middleware.routes import route_policy
from service.api.negotiation import reply_format
from service.api.schemas import ErrorReply, SnapshotReply, SnapshotTable, TableInfo, WeightsJson

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
    responses={**ERRORS, 200: {"description": (
        "A fixed table: the whole (num_embeddings, embedding_dim) matrix as one .npy, or JSON "
        "{shape, vectors}. A dynamic table: an .npz of ids (int64, ascending) and weights "
        "(their rows), or JSON {ids, shape, vectors}."),
        "content": {NPY: NPY_CONTENT, NPZ: NPY_CONTENT,
                    JSON: {"schema": WeightsJson.model_json_schema()}}}},
)
async def export_weights(
    name: str, request: Request, tables: TablesDep, settings: SettingsDep
) -> Response:
    """The table's weights: streamed as one .npy (fixed tables) or an .npz of ids and weights
    (dynamic tables), or as JSON with `Accept: application/json` up to max_json_weights_bytes.
    Header X-Table-Step: the step of the export."""
    table = tables.get(name)
    fmt = reply_format(request, weights_io.media_type(table),
                       offered=(weights_io.media_type(table), JSON))
    return await weights_io.export(table, fmt, settings.max_json_weights_bytes)


@router.put(
    "/v1/tables/{name}/weights",
    responses={**ERRORS},
    openapi_extra={"requestBody": {"required": True, "content": {NPY: NPY_CONTENT,
                                                                 NPZ: NPY_CONTENT}}},
    response_model_exclude_unset=True,
)
@route_policy(body_limit="max_weights_body_bytes")  # a whole table: not max_body_bytes
async def import_weights(
    name: str, request: Request, response: Response, tables: TablesDep, settings: SettingsDep
) -> TableInfo:
    """A fixed table: replace its weights with an .npy of exactly its shape and dtype, in one
    step (lookups see the old or the new matrix, never a mix). A dynamic table: set the rows of
    an .npz's ids to its weights (rows made where absent; the others kept). 422 on any mismatch,
    table unchanged. The pending gradient (computed on the old weights) is dropped; the
    optimizer state and the step are kept. Header X-Pending-Rows-Dropped."""
    table = tables.get(name)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    wanted = weights_io.media_type(table)
    if content_type != wanted:
        raise UnsupportedMediaType(
            f"Content-Type {content_type!r} is not supported here; send {wanted!r} "
            f"({weights_io.DESCRIBED[wanted]})")
    limit = settings.max_weights_body_bytes or settings.memory_budget_bytes
    dropped = await weights_io.receive(table, request.stream(), limit)
    response.headers["X-Pending-Rows-Dropped"] = str(dropped)
    return TableInfo(**table.info())
