"""Embedding parameter service: named embedding tables served to remote trainers over HTTP.

The client is re-exported here, lazily: `from service import EmbeddingClient` imports
service.client (and with it httpx) on first use, so that `import service.core` or the server's
`import service.api` loads no client library. The list of names is the client's `__all__`,
repeated below because reading it would import the client; tests/client/test_exports.py checks
that the two agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ below
    from service.client import (
        ApplyResult,
        AsyncEmbeddingClient,
        EmbeddingClient,
        EmbeddingClientError,
        InvalidRequestError,
        KeyedWeights,
        Lookup,
        Neighbours,
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
    "KeyedWeights",
    "Lookup",
    "Neighbours",
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
CLIENT_NAMES = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> Any:
    """The client's public names, imported from service.client when first asked for (PEP 562)."""
    if name in CLIENT_NAMES:
        from service import client

        value = getattr(client, name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'service' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *CLIENT_NAMES})
