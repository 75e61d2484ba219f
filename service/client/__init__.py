"""The Python client of the embedding service: numpy arrays in and out, retries that are safe.

    from service.client import EmbeddingClient

    with EmbeddingClient("http://127.0.0.1:8000") as client:
        client.create_table("words", num_embeddings=10_000, embedding_dim=64, optimizer="adam")
        vectors = client.lookup("words", ids)          # ids.shape + (64,)
        client.push_gradients("words", ids, grads)
        client.apply("words")
        client.create_table("users", embedding_dim=32, dynamic={"capacity": 1_000_000})
        client.push_gradients("users", hashed_ids, grads)  # any int64 / uint64 ids

AsyncEmbeddingClient is the same with `await` (and `async with`). Only numpy, httpx and orjson
are needed: nothing of the server side is imported.
"""

from service.client.asyncio import AsyncEmbeddingClient
from service.client.errors import (
    EmbeddingClientError,
    InvalidRequestError,
    PayloadTooLargeError,
    ServerError,
    ServerUnavailableError,
    StaleGradientError,
    TableExistsError,
    TableNotFoundError,
    UnauthorizedError,
)
from service.client.models import (
    ApplyResult,
    KeyedWeights,
    Lookup,
    Neighbours,
    PushResult,
    TableInfo,
)
from service.client.sync import EmbeddingClient

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
]
