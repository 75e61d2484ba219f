"""The clients (sync and async, over ASGI and uvicorn, both wires) with dynamic tables: any
int64 / uint64 ids, Python lists mixing negative ids and ids of 2**63 and more (no float on the
way), dropped rows, TableInfo's rows and evictions, weights as KeyedWeights both ways."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest

from service.client import KeyedWeights
from tests.client.conftest import ClientFactory


@pytest.mark.parametrize("wire", ["binary", "json"])
def test_hashed_ids_through_the_client(make_client: ClientFactory, wire: str) -> None:
    client = make_client(wire=wire)
    name = f"users-{uuid.uuid4().hex[:8]}"
    info = client.create_table(name, embedding_dim=3, seed=1, dtype="float64",
                               optimizer={"kind": "sgd", "lr": 1.0},
                               dynamic={"capacity": 3, "admit_after": 2})
    assert info.num_embeddings is None and info.shape == (None, 3) and info.is_dynamic
    assert info.dynamic == {"capacity": 3, "admit_after": 2, "evict": "lru", "ttl_steps": None,
                            "max_candidates": 1_000_000}
    assert (info.rows, info.evicted_rows) == (0, 0)
    mixed: list[Any] = [-5, 2**63 + 1, 2**64 - 1]  # numpy alone would make these floats
    as_int64 = np.array([-5, -(2**63) + 1, -1])
    initial = client.lookup(name, as_int64)
    np.testing.assert_array_equal(client.lookup(name, mixed), initial)
    np.testing.assert_array_equal(client.lookup(name, np.array(mixed[1:], np.uint64)),
                                  initial[1:])
    grads = np.ones((3, 3))
    assert client.push_gradients(name, mixed, grads).dropped_rows == 3
    pushed = client.push_gradients(name, as_int64.view(np.uint64), grads, apply=True)
    assert (pushed.dropped_rows, pushed.rows_updated, pushed.step) == (0, 3, 1)
    np.testing.assert_array_equal(client.lookup(name, mixed), initial - 1)
    client.push_gradients(name, [7, 7], np.ones((2, 3)), apply=True)
    client.push_gradients(name, [7], np.ones((1, 3)), apply=True)  # admitted: evicts -2**63+1
    info = client.get_table(name)
    assert (info.rows, info.evicted_rows, info.step) == (3, 1, 2)
    exported = client.export_weights(name)
    assert isinstance(exported, KeyedWeights)
    assert exported.ids.tolist() == [-5, -1, 7]
    client.import_weights(name, np.zeros((2, 3)), ids=np.array([2**63 + 9, 8], np.uint64))
    keys, weights = client.export_weights(name)
    assert keys.tolist() == [-(2**63) + 9, 7, 8]  # capacity 3: -5 and -1 left
    np.testing.assert_array_equal(client.lookup(name, [8]), np.zeros((1, 3)))
    client.set_labels(name, ["big"], ids=np.array([2**63 + 9], np.uint64))
    assert client.get_labels(name) == {-(2**63) + 9: "big"}
    client.delete_table(name)


def test_a_fixed_table_still_exports_a_matrix(make_client: ClientFactory) -> None:
    client = make_client()
    name = f"words-{uuid.uuid4().hex[:8]}"
    client.create_table(name, 4, 2)
    assert client.export_weights(name).shape == (4, 2)
    with pytest.raises(TypeError, match="embedding_dim"):
        client.create_table(name, 4)
    client.delete_table(name)
