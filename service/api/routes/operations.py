"""The embedding layer over HTTP: lookup (forward), gradient push (backward), apply (step).

These routes are the documented API (OpenAPI). Lookup and push hand the request to
service.api.handlers, which the binary fast path (service.api.middleware.fast_path) calls too
for the binary bodies these routes name, so a request gets the same reply whichever way it is
served. Binary bodies skip pydantic and JSON entirely.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from service.api import codecs, handlers
from service.api.codecs import JSON, NPY, NPZ
from service.api.deps import SettingsDep, TablesDep
from service.api.errors import validate_model
from service.api.handlers import Exchange
from service.api.metrics import note_request
from service.api.middleware.routes import route_policy
from service.api.negotiation import request_format
from service.api.schemas import (
    ApplyReply,
    ApplyRequest,
    ErrorReply,
    LookupReply,
    LookupRequest,
    PushReply,
    PushRequest,
)

router = APIRouter(prefix="/v1/tables", tags=["operations"])

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorReply} for code in (404, 406, 409, 413, 415, 422)
}


def binary_content(description: str) -> dict[str, Any]:
    """A binary media type's entry. OpenAPI's Media Type Object has no `description` (strict
    validators refuse one): the sentence goes on its schema, which Swagger UI shows as well."""
    return {"schema": {"type": "string", "format": "binary", "description": description}}


def body_doc(json_model: type[BaseModel], binary: dict[str, str]) -> dict[str, Any]:
    """A request body of JSON (json_model) or binary media types ({media type: description});
    the body's own description lists every format, one line each."""
    formats = [f"`{JSON}`: {json_model.__name__}", *(f"`{media}`: {description}"
                                                      for media, description in binary.items())]
    return {
        "requestBody": {
            "required": True,
            "description": "One of:\n\n" + "\n".join(f"- {line}" for line in formats),
            "content": {
                JSON: {"schema": json_model.model_json_schema(
                    ref_template="#/components/schemas/{model}")},
                **{media: binary_content(description) for media, description in binary.items()},
            },
        }
    }


@router.post(
    "/{name}/lookup",
    responses={
        200: {"content": {JSON: {"schema": LookupReply.model_json_schema()},
                          NPY: binary_content("rows, shape ids.shape + (embedding_dim,)")},
              "description": "The rows W[ids], as JSON or .npy of shape ids.shape + "
                             "(embedding_dim,); header X-Table-Step holds the table step."},
        **ERRORS,
    },
    openapi_extra=body_doc(LookupRequest, {NPY: "an integer array of ids (.npy)"}),
)
@route_policy(binary=handlers.lookup, binary_types=(NPY,))  # the binary fast path
async def lookup(name: str, request: Request, tables: TablesDep, settings: SettingsDep) -> Response:
    """W[ids] for an id, or an n-dimensional array of ids, as JSON or .npy."""
    return await handlers.lookup(Exchange.of_request(request, name, tables, settings))


@router.post(
    "/{name}/gradients",
    response_model=PushReply,
    responses=ERRORS,
    openapi_extra=body_doc(PushRequest, {
        NPZ: "an .npz holding arrays ids and grads",
        NPY: "ids.npy and grads.npy back to back (np.save twice into one stream)",
    }),
)
@route_policy(binary=handlers.push, binary_types=(NPZ, NPY))  # the binary fast path
async def push_gradients(
    name: str, request: Request, tables: TablesDep, settings: SettingsDep
) -> Response:
    """Add grads into the pending gradient of rows ids (duplicate ids sum, as np.add.at).
    JSON {"ids", "grads", "apply", "step"}, an .npz holding ids and grads, or ids.npy and
    grads.npy back to back (binary bodies: apply and step are query parameters)."""
    return await handlers.push(Exchange.of_request(request, name, tables, settings))


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
