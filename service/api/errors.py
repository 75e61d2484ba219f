"""Where errors become HTTP replies: `{"detail": "<a sentence>"}`, the error's status, and its
wire code in the X-Error-Code header.

Each error class states its status and code (service.core.errors has the core's, and says why);
the web layer's own kinds are below. Every reply of the service's making is rendered here, by
service_error_reply, whether it comes from a route, the binary fast path or a middleware (auth,
body limits, idempotency keys). Starlette's own refusals (an unknown path, a method a route
does not serve) are HTTPExceptions; they get codes by status from HTTP_EXCEPTION_CODES.
`wire_codes()` lists every code with its status: docs/api.md's table, checked by a test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from service.core.errors import EmbeddingServiceError, InvalidRequest


class PayloadTooLarge(EmbeddingServiceError):
    """A body or an id list over the configured limit."""

    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(EmbeddingServiceError):
    """A Content-Type the endpoint does not read."""

    status_code = 415
    code = "unsupported_media_type"


class NotAcceptable(EmbeddingServiceError):
    """An Accept header the endpoint cannot answer."""

    status_code = 406
    code = "not_acceptable"


class Unauthorized(EmbeddingServiceError):
    """A request without the right bearer token (service.api.middleware.auth)."""

    status_code = 401
    code = "unauthorized"


class RequestTimeout(EmbeddingServiceError):
    """A request's head or body arrived too slowly; sent by the HTTP protocol itself
    (service.api.connections), which then closes the connection."""

    status_code = 408
    code = "request_timeout"


class TooManyConnections(EmbeddingServiceError):
    """A connection over max_connections, answered at once by the HTTP protocol and closed."""

    status_code = 503
    code = "too_many_connections"


class InvalidIdempotencyKey(InvalidRequest):
    """An Idempotency-Key header that is empty, too long or not printable ASCII."""

    status_code = 422
    code = "invalid_idempotency_key"


class IdempotencyKeyReused(InvalidRequest):
    """An Idempotency-Key already used for another request (another body, query or type)."""

    status_code = 422
    code = "idempotency_key_reused"


# Starlette's and FastAPI's own refusals (HTTPException), by status: an unknown path, a method
# the route does not serve, a body over the limit found while reading it (limits.BodyTooLarge).
HTTP_EXCEPTION_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def error_classes() -> list[type[EmbeddingServiceError]]:
    """Every class of the hierarchy defined so far (the core's and the web layer's)."""
    found: list[type[EmbeddingServiceError]] = []
    pending = [EmbeddingServiceError]
    while pending:
        for cls in pending.pop().__subclasses__():
            found.append(cls)
            pending.append(cls)
    return found


def wire_codes() -> dict[str, int]:
    """Every X-Error-Code the service sends, with the HTTP status it comes with."""
    codes = {cls.code: cls.status_code for cls in error_classes()}
    for status, code in HTTP_EXCEPTION_CODES.items():
        codes.setdefault(code, status)
    return codes


MAX_DETAIL_CHARS = 1000  # a detail echoing a client's huge value is cut (logs, idempotency store)


def shorten(text: str, limit: int = 80) -> str:
    """`text`, cut to `limit` characters with "..." if longer: for echoing what a client sent."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def service_error_reply(
    error: EmbeddingServiceError, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The reply to an error: its sentence, its status, its code (and any extra headers)."""
    return JSONResponse({"detail": shorten(error.detail, MAX_DETAIL_CHARS)},
                        status_code=error.status_code,
                        headers={**(headers or {}), "X-Error-Code": error.code})


def describe_validation_error(errors: Sequence[Any]) -> str:
    """pydantic's first complaint as one sentence naming the field and the value."""
    first = errors[0]
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    field = shorten(".".join(location) or "body")
    message = first.get("msg", "is invalid")
    if first.get("type") == "missing":
        return f"{field} is required"
    if first.get("type") == "extra_forbidden":
        return f"{field} is not a field of this request"
    return f"{field}: {message}, got {shorten(repr(first.get('input')))}"


Model = TypeVar("Model", bound=BaseModel)


def validate_model(model: type[Model], data: Any) -> Model:
    """model.model_validate(data), with pydantic's complaint turned into InvalidRequest (422)."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise InvalidRequest(describe_validation_error(error.errors())) from None


def http_error_reply(error: HTTPException) -> JSONResponse:
    if isinstance(error.__cause__, ClientDisconnect):
        # FastAPI wraps a client gone mid-body as a 400: it is no reply (RequestObserver: 499)
        raise error.__cause__
    if error.status_code == 400 and error.__cause__ is not None:
        # FastAPI could not read the body (bad UTF-8, nesting deeper than json allows):
        # 422 and the reason, as for any other unreadable JSON body
        return service_error_reply(
            InvalidRequest(f"body could not be parsed as JSON: {error.__cause__}"))
    headers = dict(error.headers or {})
    code = HTTP_EXCEPTION_CODES.get(error.status_code)
    if code is not None:
        headers["X-Error-Code"] = code
    return JSONResponse({"detail": shorten(str(error.detail), MAX_DETAIL_CHARS)},
                        status_code=error.status_code, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """The replies to errors raised in routes; the binary fast path (service.api.middleware)
    calls service_error_reply and http_error_reply itself, so its errors are the same."""

    async def service_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, EmbeddingServiceError)
        return service_error_reply(error)

    async def validation_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return service_error_reply(InvalidRequest(describe_validation_error(error.errors())))

    async def http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        return http_error_reply(error)

    app.add_exception_handler(EmbeddingServiceError, service_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
