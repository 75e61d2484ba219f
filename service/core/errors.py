"""The service's exceptions: one hierarchy, each class stating its HTTP status and wire code.

An error's reply is `{"detail": <its sentence>}` with status `status_code` and the header
`X-Error-Code: <code>` (service.api.errors renders it; the classes of the web layer itself are
there too). The code is what clients branch on (the sentence is for people): it is stated here
once per class, never derived from the class name, and never changes once sent. A subclass that
does not state both is refused when it is defined, so no error can reach a client unmapped.

    class StaleGradient(EmbeddingServiceError):
        status_code = 409
        code = "stale_gradient"
"""

from __future__ import annotations

from typing import Any, ClassVar


class EmbeddingServiceError(Exception):
    """Base class of every error the service raises on purpose. `detail` is a sentence for the
    user that names the field and the value; `status_code` and `code` are stated by each
    subclass (this class itself is never raised)."""

    status_code: ClassVar[int]
    code: ClassVar[str]

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        missing = [name for name in ("status_code", "code") if name not in vars(cls)]
        if missing:
            raise TypeError(f"{cls.__qualname__} must state its own {' and '.join(missing)} "
                            "(the HTTP status and X-Error-Code of its reply)")


class TableNotFound(EmbeddingServiceError):
    status_code = 404
    code = "table_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"table {name!r} does not exist")
        self.name = name


class TableExists(EmbeddingServiceError):
    status_code = 409
    code = "table_exists"

    def __init__(self, name: str) -> None:
        super().__init__(f"table {name!r} already exists")
        self.name = name


class InvalidRequest(EmbeddingServiceError):
    """A field of a request has a value the service cannot accept."""

    status_code = 422
    code = "invalid_request"


class BudgetExceeded(EmbeddingServiceError):
    """A table (or a pending gradient) would not fit in the memory budget, or the table count
    limit is reached."""

    status_code = 413
    code = "budget_exceeded"


class StaleGradient(EmbeddingServiceError):
    """A gradient was computed at a step older than the table's max_staleness allows."""

    status_code = 409
    code = "stale_gradient"


class StorageError(EmbeddingServiceError):
    """The data directory could not be written or read (a snapshot failed): the disk's fault,
    not the request's."""

    status_code = 503
    code = "storage_error"


class SnapshotDamaged(StorageError):
    """A snapshot in the data directory is truncated, corrupt or incomplete. `path` names the
    file (or directory) at fault."""

    status_code = 503
    code = "snapshot_damaged"

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"damaged snapshot: {path}: {reason}")
        self.path = path
        self.reason = reason


class ShardUnavailable(EmbeddingServiceError):
    """A cluster-mode table's shard that a request needs is down (restarting, or its node is
    gone): retry after `retry_after_seconds` (the reply's Retry-After header)."""

    status_code = 503
    code = "shard_unavailable"

    def __init__(self, detail: str, retry_after_seconds: int = 1) -> None:
        super().__init__(detail)
        self.retry_after_seconds = retry_after_seconds


class ShardMapChanged(EmbeddingServiceError):
    """A request reached a shard server that does not hold what it asked for (the table was
    deleted or created again, or the shard moved): the sender's map of the table's shards is
    out of date. The SDK then asks a front for the map again; a person never sees it."""

    status_code = 421
    code = "shard_map_changed"
