"""Every exception type, raised by the sync and the async client alike, with status and detail."""

from __future__ import annotations

from typing import Any

import anyio
import numpy as np
import pytest

from service.client import (
    AsyncEmbeddingClient,
    EmbeddingClient,
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
from service.client.errors import ERROR_OF_CODE, ERROR_OF_STATUS, error_for
from tests.client.conftest import ClientFactory
from tests.client.transports import FaultyTransport
from tests.conftest import free_port


def test_table_not_found(client: Any, table_name: str) -> None:
    for call in (
        lambda: client.get_table(table_name),
        lambda: client.lookup(table_name, [0]),
        lambda: client.push_gradients(table_name, [0], [[1.0]]),
        lambda: client.apply(table_name),
        lambda: client.delete_table(table_name),
        lambda: client.export_weights(table_name),
    ):
        with pytest.raises(TableNotFoundError) as caught:
            call()
        assert caught.value.status == 404
        assert caught.value.code == "table_not_found"
        assert caught.value.detail == f"table {table_name!r} does not exist"


def test_table_exists(client: Any, table_name: str) -> None:
    client.create_table(table_name, 3, 2)
    with pytest.raises(TableExistsError) as caught:
        client.create_table(table_name, 3, 2)
    assert (caught.value.status, caught.value.code) == (409, "table_exists")
    assert caught.value.detail == f"table {table_name!r} already exists"


def test_stale_gradient(client: Any, table_name: str) -> None:
    client.create_table(table_name, 3, 2, max_staleness=0)
    client.push_gradients(table_name, [0], [[1.0, 1.0]], apply=True)  # step 1
    with pytest.raises(StaleGradientError) as caught:
        client.push_gradients(table_name, [0], [[1.0, 1.0]], step=0)
    assert (caught.value.status, caught.value.code) == (409, "stale_gradient")
    assert "1 steps stale" in caught.value.detail
    assert client.get_table(table_name).pending_rows == 0  # nothing changed


def test_invalid_request_names_the_field(client: Any, table_name: str) -> None:
    client.create_table(table_name, 3, 2)
    with pytest.raises(InvalidRequestError) as caught:
        client.lookup(table_name, [0, 3])
    assert caught.value.status == 422 and caught.value.code == "invalid_request"
    assert caught.value.detail == (
        f"ids must be < num_embeddings=3 of table {table_name!r}, got 3"
    )
    with pytest.raises(InvalidRequestError) as caught:
        client.push_gradients(table_name, [0], np.ones((1, 5)))
    assert "grads must have shape" in caught.value.detail
    with pytest.raises(InvalidRequestError) as caught:
        client.create_table("x" * 100, 3, 2)
    assert caught.value.detail.startswith("name must be 1-64 letters")
    with pytest.raises(InvalidRequestError) as caught:
        client.create_table(table_name + "b", 0, 2)
    assert "num_embeddings" in caught.value.detail


def test_payload_too_large(client: Any, table_name: str) -> None:
    with pytest.raises(PayloadTooLargeError) as caught:
        client.create_table(table_name, 10**9, 10**6)  # far over the memory budget
    assert (caught.value.status, caught.value.code) == (413, "budget_exceeded")
    assert "memory budget" in caught.value.detail


def test_payload_too_large_ids(make_client: ClientFactory, table_name: str) -> None:
    client = make_client(settings={"max_ids_per_request": 4})
    client.create_table(table_name, 10, 2)
    with pytest.raises(PayloadTooLargeError) as caught:
        client.lookup(table_name, np.arange(5))
    assert caught.value.status == 413 and "max_ids_per_request=4" in caught.value.detail


def test_unauthorized(make_client: ClientFactory, table_name: str) -> None:
    settings = {"token": "s3cret-token"}
    anonymous = make_client(settings=settings)
    with pytest.raises(UnauthorizedError) as caught:
        anonymous.list_tables()
    assert caught.value.status == 401 and "Authorization" in caught.value.detail
    wrong = make_client(settings=settings, token="guess")
    with pytest.raises(UnauthorizedError):
        wrong.create_table(table_name, 3, 2)
    assert anonymous.health() == {"status": "ok"}  # liveness needs no token

    client = make_client(settings=settings, token="s3cret-token")
    assert client.create_table(table_name, 3, 2).name == table_name
    assert client.lookup(table_name, [1]).shape == (1, 2)


def test_server_unavailable_after_retries(client_kind: str, make_client: ClientFactory) -> None:
    fault = FaultyTransport("/v1/tables", "refuse", times=10)
    client = make_client(fault=fault, retries=2)
    with pytest.raises(ServerUnavailableError) as caught:
        client.list_tables()
    assert caught.value.status is None
    assert "after 3 attempt(s)" in caught.value.detail and "ConnectError" in caught.value.detail
    assert fault.remaining == 10 - 3  # the first attempt and two retries


def test_nothing_listening() -> None:
    client = EmbeddingClient(f"http://127.0.0.1:{free_port()}", retries=1, backoff=0.001)
    with client, pytest.raises(ServerUnavailableError) as caught:
        client.health()
    assert "after 2 attempt(s)" in caught.value.detail and caught.value.status is None


def test_503_until_retries_run_out(make_client: ClientFactory) -> None:
    fault = FaultyTransport("/v1/tables", "503", times=10)
    client = make_client(fault=fault, retries=1)
    with pytest.raises(ServerUnavailableError) as caught:
        client.list_tables()
    assert (caught.value.status, caught.value.detail) == (503, "upstream timed out (injected)")
    assert len(fault.replies) == 2  # the server answered both attempts; the proxy lost both


def test_500_is_not_retried(make_client: ClientFactory) -> None:
    fault = FaultyTransport("/v1/tables", "500", times=10)
    client = make_client(fault=fault, retries=2)
    with pytest.raises(ServerError) as caught:
        client.list_tables()
    assert (caught.value.status, caught.value.detail) == (500, "injected")
    assert fault.remaining == 9


def test_every_error_is_an_embedding_client_error() -> None:
    for cls in (TableNotFoundError, TableExistsError, StaleGradientError, InvalidRequestError,
                UnauthorizedError, PayloadTooLargeError, ServerUnavailableError, ServerError):
        assert issubclass(cls, EmbeddingClientError)


@pytest.mark.parametrize(
    ("status", "detail", "code", "expected"),
    [
        (404, "table 'a' does not exist", "table_not_found", TableNotFoundError),
        (404, "Not Found", None, ServerError),  # an unknown URL is not a missing table
        (409, "table 'a' already exists", "table_exists", TableExistsError),
        (409, "gradient computed at step 0 is 3 steps stale", "stale_gradient",
         StaleGradientError),
        # the sentence is never read: without a code, a 409 cannot be told apart
        (409, "gradient computed at step 0 is 3 steps stale", None, ServerError),
        (409, "table 'a' already exists", None, ServerError),
        (409, "table 'a' already exists", "a_code_from_a_newer_service", ServerError),
        (404, "Not Found", "not_found", ServerError),
        (422, "Idempotency-Key must be 1-255 printable", "invalid_idempotency_key",
         InvalidRequestError),
        (401, "Authorization token is not valid", "unauthorized", UnauthorizedError),
        (422, "ids must be >= 0, got -1", "invalid_request", InvalidRequestError),
        (415, "Content-Type 'text/plain' is not supported", "unsupported_media_type",
         InvalidRequestError),
        (401, "Authorization token is not valid", None, UnauthorizedError),
        (403, "forbidden", None, UnauthorizedError),
        (413, "body exceeds max_body_bytes=10", None, PayloadTooLargeError),
        (413, "table 'a' needs 8 bytes", "budget_exceeded", PayloadTooLargeError),
        (503, "the data directory refused", "storage_error", ServerUnavailableError),
        (503, "damaged snapshot: weights.npy", "snapshot_damaged", ServerUnavailableError),
        (408, "request head not complete within request_head_timeout_seconds=10",
         "request_timeout", ServerUnavailableError),
        (503, "the server holds max_connections=1000 connections", "too_many_connections",
         ServerUnavailableError),
        (422, "a sentence that says stale and exists", "invalid_request", InvalidRequestError),
        (500, "Internal Server Error", None, ServerError),
    ],
)
def test_error_for(status: int, detail: str, code: str | None, expected: type) -> None:
    error = error_for(status, detail, code)
    assert type(error) is expected
    assert (error.status, error.detail, error.code) == (status, detail, code)
    assert str(error) == f"{detail} (HTTP {status})"


def test_the_client_knows_every_code_the_service_sends() -> None:
    """One table on each side: every code the service can send has its exception here, of the
    kind its status says (the server's hierarchy is read by the test, never by the client)."""
    from service.api.errors import wire_codes

    assert set(ERROR_OF_CODE) == set(wire_codes())
    for code, status in wire_codes().items():
        by_status = ERROR_OF_STATUS.get(status, ServerError)
        assert ERROR_OF_CODE[code] is by_status or status in (404, 409), code



@pytest.mark.parametrize("side", ["sync", "async"])
def test_a_body_far_over_the_limit_is_refused_with_the_server_s_reply(
    live_servers: Any, side: str
) -> None:
    """uvicorn refuses a 24 MB body over max_body_bytes before reading it, replies 413 and
    closes, so sending fails midway: the client still reads that reply (not a lost
    connection retried, uploading the body again each time)."""
    server = live_servers({"max_body_bytes": 100_000})
    ids = np.zeros(3_000_000, np.int64)
    if side == "sync":
        with EmbeddingClient(server.url, retries=0) as client:
            with pytest.raises(PayloadTooLargeError) as caught:
                client.lookup("any", ids)
            health = client.health()  # on a new connection
    else:
        async def refused() -> tuple[pytest.ExceptionInfo[PayloadTooLargeError], Any]:
            async with AsyncEmbeddingClient(server.url, retries=0) as client:
                with pytest.raises(PayloadTooLargeError) as caught:
                    await client.lookup("any", ids)
                return caught, await client.health()

        caught, health = anyio.run(refused)
    assert (caught.value.status, caught.value.code) == (413, "payload_too_large")
    assert caught.value.detail == "Content-Length 24000128 exceeds max_body_bytes=100000"
    assert health == {"status": "ok"}
