"""Retries that are safe: a push or an apply whose reply was lost is sent again with the same
Idempotency-Key, the server sees it twice, and it counts once."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.client._wire import RetryPolicy
from tests.client.conftest import ClientFactory
from tests.client.transports import FaultyTransport


def sgd_table(client: Any, name: str) -> None:
    client.create_table(name, 4, 2, init="zeros", optimizer={"kind": "sgd", "lr": 1.0})


@pytest.mark.parametrize("fault", ["drop", "503"])
def test_retried_push_counts_once(
    make_client: ClientFactory, table_name: str, fault: Any
) -> None:
    faulty = FaultyTransport("/gradients", fault)
    client = make_client(fault=faulty)
    sgd_table(client, table_name)

    result = client.push_gradients(table_name, [1, 1], [[1.0, 2.0], [1.0, 2.0]])

    assert faulty.replies == [(200, False), (200, True)]  # the server saw it twice
    assert result.replayed is True and (result.rows, result.pending_rows) == (2, 1)
    client.apply(table_name)
    assert np.array_equal(client.lookup(table_name, [1]), np.array([[-2.0, -4.0]], np.float32))


@pytest.mark.parametrize("fault", ["drop", "503"])
def test_retried_asynchronous_push_steps_once(
    make_client: ClientFactory, table_name: str, fault: Any
) -> None:
    faulty = FaultyTransport("/gradients", fault)
    client = make_client(fault=faulty)
    sgd_table(client, table_name)

    result = client.push_gradients(table_name, [0], [[0.5, 0.5]], apply=True)

    assert faulty.replies == [(200, False), (200, True)]
    assert (result.step, result.rows_updated) == (1, 1)
    assert client.get_table(table_name).step == 1
    assert np.array_equal(client.lookup(table_name, [0]), np.array([[-0.5, -0.5]], np.float32))


@pytest.mark.parametrize("fault", ["drop", "503"])
def test_retried_apply_steps_once(make_client: ClientFactory, table_name: str, fault: Any) -> None:
    faulty = FaultyTransport("/apply", fault)
    client = make_client(fault=faulty)
    sgd_table(client, table_name)
    client.push_gradients(table_name, [2], [[1.0, 1.0]])

    result = client.apply(table_name, lr=0.5)

    assert faulty.replies == [(200, False), (200, True)]
    assert (result.step, result.rows_updated, result.replayed) == (1, 1, True)
    info = client.get_table(table_name)
    assert (info.step, info.pending_rows) == (1, 0)
    assert np.array_equal(client.lookup(table_name, [2]), np.array([[-0.5, -0.5]], np.float32))


def test_retried_create_is_created_once(make_client: ClientFactory, table_name: str) -> None:
    """Without the key, the retry of a create whose reply was lost would say 'already exists'."""
    faulty = FaultyTransport("/v1/tables", "drop")
    client = make_client(fault=faulty)
    info = client.create_table(table_name, 3, 2)
    assert info.name == table_name
    assert faulty.replies == [(201, False), (201, True)]


def test_retried_delete_is_not_a_404(make_client: ClientFactory, table_name: str) -> None:
    faulty = FaultyTransport(f"/v1/tables/{table_name}", "drop")
    client = make_client(fault=faulty)
    client.create_table(table_name, 3, 2)
    assert client.delete_table(table_name) is None
    assert faulty.replies == [(204, False), (204, True)]


def test_lookup_is_retried(make_client: ClientFactory, table_name: str) -> None:
    faulty = FaultyTransport("/lookup", "drop")
    client = make_client(fault=faulty)
    sgd_table(client, table_name)
    assert np.array_equal(client.lookup(table_name, [3]), np.zeros((1, 2), np.float32))
    assert faulty.replies == [(200, False), (200, False)]  # reads run again: nothing to replay


def test_refused_connection_then_success(make_client: ClientFactory, table_name: str) -> None:
    faulty = FaultyTransport("/gradients", "refuse", times=2)
    client = make_client(fault=faulty, retries=2)
    sgd_table(client, table_name)
    result = client.push_gradients(table_name, [0], [[1.0, 1.0]])
    assert faulty.replies == [(200, False)]  # the server saw only the third attempt
    assert result.replayed is False and result.pending_rows == 1


def test_no_retries(make_client: ClientFactory, table_name: str) -> None:
    from service.client import ServerUnavailableError

    faulty = FaultyTransport("/gradients", "drop")
    client = make_client(fault=faulty, retries=0)
    sgd_table(client, table_name)
    with pytest.raises(ServerUnavailableError):
        client.push_gradients(table_name, [0], [[1.0, 1.0]])
    assert faulty.replies == [(200, False)]  # it was applied; the caller was told it may have been
    assert client.get_table(table_name).pending_rows == 1


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(retries=5, backoff=0.1, max_backoff=1.0)
    for attempt, ceiling in enumerate([0.1, 0.2, 0.4, 0.8, 1.0, 1.0]):
        delays = [policy.delay(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(set(delays)) > 1  # jittered
    assert 0.5 <= policy.delay(0, retry_after="0.5") <= 0.5 + 1e-12
    assert policy.delay(0, retry_after="30") == 1.0  # capped at max_backoff
    assert policy.delay(0, retry_after="Wed, 21 Oct 2015 07:28:00 GMT") <= 0.1
