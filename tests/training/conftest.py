"""A client of the session's live uvicorn server, or of the session's cluster-mode front (its
tables of 2 shards, the SDK routing each id to its shard), and a factory of fresh tables on it:
the training layers run against both, unchanged."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from service.client import EmbeddingClient
from tests.conftest import LiveServer


@pytest.fixture(params=["uvicorn", "cluster"])
def client(request: pytest.FixtureRequest) -> Iterator[EmbeddingClient]:
    server: LiveServer = request.getfixturevalue(
        "live_server" if request.param == "uvicorn" else "cluster_front")
    with EmbeddingClient(server.url) as client:
        yield client


@pytest.fixture
def make_table(client: EmbeddingClient) -> Iterator[Callable[..., str]]:
    """make_table(num_embeddings, embedding_dim, **create_table options) -> a new table's name;
    the tables are deleted afterwards."""
    names: list[str] = []

    def create(num_embeddings: int, embedding_dim: int, **options: Any) -> str:
        name = f"train-{uuid.uuid4().hex[:12]}"
        client.create_table(name, num_embeddings, embedding_dim, **options)
        names.append(name)
        return name

    yield create
    for name in names:
        client.delete_table(name)
