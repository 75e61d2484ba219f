"""The embedding layer over HTTP: lookup (forward), gradient push (backward), apply (step).

Binary bodies skip pydantic and JSON entirely: the .npy / .npz bytes are read with
np.frombuffer and the reply rows are gathered straight into the reply buffer. Numeric work runs
in the thread pool (numpy releases the GIL), so the event loop keeps serving other requests.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from service.api import codecs
from service.api.codecs import JSON, NPY, NPZ
from service.api.deps import SettingsDep, TablesDep
from service.api.errors import PayloadTooLarge, validate_model
from service.api.metrics import note_request
from service.api.negotiation import reply_format, request_format
from service.api.schemas import (
    ApplyReply,
    ApplyRequest,
    ErrorReply,
    LookupReply,
    LookupRequest,
    PushReply,
    PushRequest,
)
from service.api.settings import Settings
from service.core.errors import InvalidRequest

router = APIRouter(prefix="/v1/tables", tags=["operations"])

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorReply} for code in (404, 406, 409, 413, 415, 422)
}


def npy_schema(description: str) -> dict[str, Any]:
    return {"schema": {"type": "string", "format": "binary"}, "description": description}


def body_doc(json_model: type, binary: str, description: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": json_model.model_json_schema(ref_template="#/components/schemas/{model}")},
                binary: npy_schema(description),
            },
        }
    }


def _check_count(ids: np.ndarray, settings: Settings) -> None:
    limit = settings.max_ids_per_request
    if ids.size > limit:
        raise PayloadTooLarge(f"ids has {ids.size} entries, more than max_ids_per_request={limit}")
    if ids.ndim and max(ids.shape) > limit:  # (10**9, 0) holds no id but a JSON reply of 10**9 []
        raise PayloadTooLarge(
            f"ids has shape {list(ids.shape)}, a dimension over max_ids_per_request={limit}"
        )


def _check_grads_fit(grads: np.ndarray, dtype: np.dtype) -> None:
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


def _query_flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise InvalidRequest(f"query parameter {name} must be true or false, got {value!r}")


def _query_int(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidRequest(f"query parameter {name} must be an integer, got {value!r}") from None


@router.post(
    "/{name}/lookup",
    responses={
        200: {"content": {JSON: {"schema": LookupReply.model_json_schema()},
                          NPY: npy_schema("rows, shape ids.shape + (embedding_dim,)")},
              "description": "The rows W[ids]; header X-Table-Step holds the table step."},
        **ERRORS,
    },
    openapi_extra=body_doc(LookupRequest, NPY, "an integer array of ids (.npy)"),
)
async def lookup(name: str, request: Request, tables: TablesDep, settings: SettingsDep) -> Response:
    """W[ids] for an id, or an n-dimensional array of ids, as JSON or .npy."""
    table = tables.get(name)
    body = await request.body()
    fmt = request_format(request, NPY)
    out_fmt = reply_format(request, fmt)
    if fmt == NPY:
        ids = codecs.parse_npy(body, "ids")
    else:
        fields = codecs.parse_json_object(body)
        codecs.reject_unknown_fields(fields, {"ids"})
        ids = codecs.json_array(fields.get("ids"), "ids", "iu", settings.max_json_depth)
    _check_count(ids, settings)
    note_request(request, table, ids.size)
    shape = (*ids.shape, table.embedding_dim)
    if out_fmt == NPY:
        buffer, rows = codecs.npy_reply_buffer(table.dtype, shape)
        _, step = await run_in_threadpool(table.lookup, ids, rows)
        note_request(request, table, ids.size, looked_up=ids.size)
        return Response(memoryview(buffer), media_type=NPY, headers={"X-Table-Step": str(step)})
    rows, step = await run_in_threadpool(table.lookup, ids)
    note_request(request, table, ids.size, looked_up=ids.size)
    body_out = codecs.dumps({"shape": list(shape), "step": step, "vectors": rows})
    return Response(body_out, media_type=JSON, headers={"X-Table-Step": str(step)})


@router.post(
    "/{name}/gradients",
    responses=ERRORS,
    openapi_extra=body_doc(PushRequest, NPZ, "an .npz holding arrays ids and grads"),
)
async def push_gradients(
    name: str, request: Request, tables: TablesDep, settings: SettingsDep
) -> PushReply:
    """Add grads into the pending gradient of rows ids (duplicate ids sum, as np.add.at).
    JSON {"ids", "grads", "apply", "step"} or an .npz holding ids and grads (then apply and step
    are query parameters)."""
    table = tables.get(name)
    body = await request.body()
    fmt = request_format(request, NPZ)
    if fmt == NPZ:
        arrays = codecs.parse_npz(body, ("ids", "grads"), settings.max_body_bytes)
        ids, grads = arrays["ids"], arrays["grads"]
        apply, step = _query_flag(request, "apply"), _query_int(request, "step")
    else:
        fields = codecs.parse_json_object(body)
        codecs.reject_unknown_fields(fields, {"ids", "grads", "apply", "step"})
        ids = codecs.json_array(fields.get("ids"), "ids", "iu", settings.max_json_depth)
        grads = codecs.json_array(fields.get("grads"), "grads", "iuf", settings.max_json_depth + 1)
        apply, step = fields.get("apply", False), fields.get("step")
        if type(apply) is not bool:
            raise InvalidRequest(f"apply must be true or false, got {apply!r}")
        if step is not None and type(step) is not int:
            raise InvalidRequest(f"step must be an integer, got {step!r}")
        if ids.size == 0 and grads.size == 0:  # JSON cannot say (0, dim): [] means no rows
            grads = grads.reshape(*ids.shape, table.embedding_dim)
    _check_count(ids, settings)
    _check_grads_fit(grads, table.dtype)
    note_request(request, table, ids.size)
    result = await run_in_threadpool(table.push, ids, grads, apply=apply, step=step)
    note_request(request, table, ids.size, pushed=ids.size, updated=result.rows_updated)
    return PushReply(
        rows=result.rows, pending_rows=result.pending_rows, step=result.step,
        rows_updated=result.rows_updated,
    )


@router.post(
    "/{name}/apply",
    responses=ERRORS,
    openapi_extra={"requestBody": {"required": False, "content": {
        JSON: {"schema": ApplyRequest.model_json_schema()}}}},
)
async def apply(name: str, request: Request, tables: TablesDep) -> ApplyReply:
    """One optimizer step over every row with a pending gradient. Body optional:
    {"lr": override, "average": divide by the number of pushes}."""
    table = tables.get(name)
    body = await request.body()
    request_format(request, JSON)
    options = ApplyRequest()
    if body.strip():
        options = validate_model(ApplyRequest, codecs.parse_json_object(body))
    result = await run_in_threadpool(table.apply, options.lr, options.average)
    note_request(request, table, result.rows_updated, updated=result.rows_updated)
    return ApplyReply(step=result.step, rows_updated=result.rows_updated)
