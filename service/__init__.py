"""Embedding parameter service: named embedding tables served to remote trainers over HTTP.

The client is re-exported here: `from service import EmbeddingClient`.
"""

__version__ = "0.1.0"

from service.client import (  # noqa: E402  (after __version__, which the server imports)
    ApplyResult,
    AsyncEmbeddingClient,
    EmbeddingClient,
    EmbeddingClientError,
    InvalidRequestError,
    Lookup,
    PayloadTooLargeError,
    PushResult,
    ServerError,
    ServerUnavailableError,
    StaleGradientError,
    TableExistsError,
    TableInfo,
    TableNotFoundError,
    UnauthorizedError,
)

__all__ = [
    "ApplyResult",
    "AsyncEmbeddingClient",
    "EmbeddingClient",
    "EmbeddingClientError",
    "InvalidRequestError",
    "Lookup",
    "PayloadTooLargeError",
    "PushResult",
    "ServerError",
    "ServerUnavailableError",
    "StaleGradientError",
    "TableExistsError",
    "TableInfo",
    "TableNotFoundError",
    "UnauthorizedError",
    "__version__",
]
