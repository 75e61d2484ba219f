"""Where errors become HTTP replies: every reply is JSON {"detail": "<a sentence>"}."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from service.core.errors import (
    BudgetExceeded,
    EmbeddingServiceError,
    InvalidRequest,
    StaleGradient,
    StorageError,
    TableExists,
    TableNotFound,
)

STATUS_OF: dict[type[EmbeddingServiceError], int] = {
    TableNotFound: 404,
    TableExists: 409,
    StaleGradient: 409,
    InvalidRequest: 422,
    BudgetExceeded: 413,
    StorageError: 503,  # the data directory refused a snapshot: the disk, not the request
}


class PayloadTooLarge(EmbeddingServiceError):
    """A body or an id list over the configured limit (HTTP 413)."""


class UnsupportedMediaType(EmbeddingServiceError):
    """A Content-Type the endpoint does not read (HTTP 415)."""


class NotAcceptable(EmbeddingServiceError):
    """An Accept header the endpoint cannot answer (HTTP 406)."""


STATUS_OF.update({PayloadTooLarge: 413, UnsupportedMediaType: 415, NotAcceptable: 406})


def status_of(error: EmbeddingServiceError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return 400


def error_code(error: EmbeddingServiceError) -> str:
    """The error's class name in snake_case (TableNotFound -> table_not_found), sent as the
    X-Error-Code header so clients can tell apart errors sharing a status (409: table_exists or
    stale_gradient) without parsing the detail sentence."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(error).__name__).lower()


def error_reply(status: int, detail: str, code: str | None = None) -> JSONResponse:
    headers = {"X-Error-Code": code} if code else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def describe_validation_error(errors: Sequence[Any]) -> str:
    """pydantic's first complaint as one sentence naming the field and the value."""
    first = errors[0]
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    field = ".".join(location) or "body"
    message = first.get("msg", "is invalid")
    if first.get("type") == "missing":
        return f"{field} is required"
    if first.get("type") == "extra_forbidden":
        return f"{field} is not a field of this request"
    value = first.get("input")
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{field}: {message}, got {shown}"


Model = TypeVar("Model", bound=BaseModel)


def validate_model(model: type[Model], data: Any) -> Model:
    """model.model_validate(data), with pydantic's complaint turned into InvalidRequest (422)."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise InvalidRequest(describe_validation_error(error.errors())) from None


def service_error_reply(error: EmbeddingServiceError) -> JSONResponse:
    return error_reply(status_of(error), error.detail, error_code(error))


def http_error_reply(error: HTTPException) -> JSONResponse:
    if error.status_code == 400 and error.__cause__ is not None:
        # FastAPI could not read the body (bad UTF-8, nesting deeper than json allows):
        # 422 and the reason, as for any other unreadable JSON body
        return error_reply(422, f"body could not be parsed as JSON: {error.__cause__}")
    return JSONResponse(
        {"detail": str(error.detail)}, status_code=error.status_code, headers=error.headers
    )


def install_error_handlers(app: FastAPI) -> None:
    """The replies to errors raised in routes; the binary fast path (service.api.fast_path)
    calls service_error_reply and http_error_reply itself, so its errors are the same."""

    async def service_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, EmbeddingServiceError)
        return service_error_reply(error)

    async def validation_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return error_reply(422, describe_validation_error(error.errors()), "invalid_request")

    async def http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        return http_error_reply(error)

    app.add_exception_handler(EmbeddingServiceError, service_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
