"""The core's exceptions: one hierarchy, mapped to HTTP statuses in one place
(service.api.errors)."""

from __future__ import annotations


class EmbeddingServiceError(Exception):
    """Base class of every error the core raises on purpose. `detail` is a sentence for the user."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class TableNotFound(EmbeddingServiceError):
    def __init__(self, name: str) -> None:
        super().__init__(f"table {name!r} does not exist")
        self.name = name


class TableExists(EmbeddingServiceError):
    def __init__(self, name: str) -> None:
        super().__init__(f"table {name!r} already exists")
        self.name = name


class InvalidRequest(EmbeddingServiceError):
    """A field of a request has a value the service cannot accept (HTTP 422)."""


class BudgetExceeded(EmbeddingServiceError):
    """A table (or a pending gradient) would not fit in the memory budget, or the table count
    limit is reached (HTTP 413)."""


class StaleGradient(EmbeddingServiceError):
    """A gradient was computed at a step older than the table's max_staleness allows (HTTP 409)."""


class StorageError(EmbeddingServiceError):
    """The data directory could not be written or read (a snapshot failed; HTTP 503)."""


class SnapshotDamaged(StorageError):
    """A snapshot in the data directory is truncated, corrupt or incomplete. `path` names the
    file (or directory) at fault."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"damaged snapshot: {path}: {reason}")
        self.path = path
        self.reason = reason
