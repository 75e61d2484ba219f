"""What the client raises: one base class, one subclass per kind of failure.

    try:
        client.lookup("words", ids)
    except TableNotFoundError:
        client.create_table("words", 10_000, 64)
    except EmbeddingClientError as error:
        print(error.status, error.detail)

Every error carries `status` (the HTTP status, None when no reply arrived), `detail` (the
server's sentence, or what went wrong on the way) and `code` (the server's X-Error-Code header,
such as "stale_gradient", when it sent one).
"""

from __future__ import annotations


class EmbeddingClientError(Exception):
    """Base class of every error the client raises."""

    def __init__(self, detail: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(f"{detail} (HTTP {status})" if status is not None else detail)
        self.detail = detail
        self.status = status
        self.code = code


class TableNotFoundError(EmbeddingClientError):
    """The table does not exist (404)."""


class TableExistsError(EmbeddingClientError):
    """A table of that name already exists (409)."""


class StaleGradientError(EmbeddingClientError):
    """The gradient's step is older than the table's max_staleness allows (409)."""


class InvalidRequestError(EmbeddingClientError):
    """The server refused a field of the request (422; also 400, 406, 415); `detail` names it."""


class UnauthorizedError(EmbeddingClientError):
    """Missing or wrong bearer token (401, 403)."""


class PayloadTooLargeError(EmbeddingClientError):
    """The body, the id count or the new table is over a server limit (413)."""


class ServerUnavailableError(EmbeddingClientError):
    """No usable reply after every retry: connection errors, timeouts, 429, 502, 503, 504."""


class ServerError(EmbeddingClientError):
    """Any other failure reply (a 500 is a bug in the service: please report it)."""


# The one table: the server's X-Error-Code of each failure reply -> what the client raises. The
# codes are the service's wire contract (docs/api.md lists them); the sentence is never read.
ERROR_OF_CODE: dict[str, type[EmbeddingClientError]] = {
    "table_not_found": TableNotFoundError,
    "table_exists": TableExistsError,
    "stale_gradient": StaleGradientError,
    "invalid_request": InvalidRequestError,
    "invalid_idempotency_key": InvalidRequestError,
    "idempotency_key_reused": InvalidRequestError,
    "unsupported_media_type": InvalidRequestError,
    "not_acceptable": InvalidRequestError,
    "unauthorized": UnauthorizedError,
    "payload_too_large": PayloadTooLargeError,
    "budget_exceeded": PayloadTooLargeError,
    "storage_error": ServerUnavailableError,
    "snapshot_damaged": ServerUnavailableError,
    "request_timeout": ServerUnavailableError,  # the request arrived too slowly: not run
    "too_many_connections": ServerUnavailableError,
    "shard_unavailable": ServerUnavailableError,  # cluster mode: a shard restarting; retried
    "shard_map_changed": ServerError,  # a shard server's own reply to an old map: the client
    # sends such requests to the front again itself, so this is never raised in practice
    "not_found": ServerError,  # an unknown URL (client and service of different versions)
    "method_not_allowed": ServerError,
}

# Replies without a code the client knows (a proxy's, or a newer service's new code), by status.
# A 404 or 409 without a code is not taken for a missing table or a conflict: ServerError.
ERROR_OF_STATUS: dict[int, type[EmbeddingClientError]] = {
    400: InvalidRequestError,
    401: UnauthorizedError,
    403: UnauthorizedError,
    406: InvalidRequestError,
    408: ServerUnavailableError,
    413: PayloadTooLargeError,
    415: InvalidRequestError,
    422: InvalidRequestError,
    429: ServerUnavailableError,
    502: ServerUnavailableError,
    503: ServerUnavailableError,
    504: ServerUnavailableError,
}


def error_for(status: int, detail: str, code: str | None) -> EmbeddingClientError:
    """The exception for a failure reply: by the server's error code, else by status."""
    cls = ERROR_OF_CODE.get(code or "") or ERROR_OF_STATUS.get(status, ServerError)
    return cls(detail, status, code)


__all__ = [
    "EmbeddingClientError",
    "InvalidRequestError",
    "PayloadTooLargeError",
    "ServerError",
    "ServerUnavailableError",
    "StaleGradientError",
    "TableExistsError",
    "TableNotFoundError",
    "UnauthorizedError",
    "error_for",
]
