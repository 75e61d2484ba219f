"""Two fronts of one cluster-mode service: a table made through one is used through the other,
and 8 threads training it at once through both (and straight to the shards) lose nothing.

The concurrency check is tests/api/test_concurrency.py's, for shards: every push sends each
row of the table exactly twice with the same integer gradient v * [1, 2, 3, 4], so

- within a shard every row moves alike: a lookup must see the rows of one shard identical, each
  a multiple of [1, 2, 3, 4] (a shard takes each push and each step whole); rows of different
  shards may be a step apart while a step is being taken (the README's semantics);
- lr = 1 and integer gradients: the float64 sums are exact in any order, so the final weights
  are exactly -2 * (sum of all v) * [1, 2, 3, 4], however the pushes interleaved.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import numpy as np

from service.client import EmbeddingClient
from service.sharding import shard_of

THREADS, PUSHES, ROWS, DIM = 8, 60, 32, 4
PATTERN = np.arange(1, DIM + 1, dtype=np.float64)  # (dim,)


def check_consistent(rows: np.ndarray, owner: np.ndarray) -> None:
    for shard in np.unique(owner):
        mine = rows[owner == shard]  # (m, dim)
        assert (mine == mine[0]).all(), f"rows of shard {shard} differ within one lookup"
        assert (mine[0] == mine[0][0] * PATTERN).all(), f"a row is half updated: {mine[0]}"


def worker(url: str, routed: bool, seed: int, pushed: list[int], failures: list[str]) -> None:
    rng = random.Random(seed)
    owner = shard_of(np.arange(ROWS), 2)
    total = 0
    try:
        with EmbeddingClient(url, route_to_shards=routed, retries=5) as client:
            for i in range(PUSHES):
                ids = rng.sample(range(ROWS), ROWS) + rng.sample(range(ROWS), ROWS)
                value = rng.randint(1, 9)
                grads = np.tile(value * PATTERN, (len(ids), 1))  # (2 * rows, dim)
                reply = client.push_gradients("t", np.array(ids), grads, apply=i % 17 == 0)
                assert reply.rows == 2 * ROWS
                total += 2 * value
                if i % 10 == 3:
                    client.apply("t")
                if i % 7 == 0:
                    check_consistent(client.lookup("t", np.arange(ROWS)), owner)
    except Exception as error:  # noqa: BLE001 - reported by the test
        failures.append(f"{type(error).__name__}: {error}")
    pushed.append(total)


def test_two_fronts_serve_one_table(cluster_service: Any) -> None:
    first, second = cluster_service(fronts=2)
    with EmbeddingClient(first.url) as one, EmbeddingClient(second.url) as other:
        one.create_table("t", ROWS, DIM, dtype="float64", init="zeros",
                         optimizer={"kind": "sgd", "lr": 1.0})
        assert other.get_table("t").shards == 2  # made through one, seen through the other
        other.push_gradients("t", np.array([3]), np.ones((1, DIM)))
        assert one.get_table("t").pending_rows == 1
        assert one.apply("t").step == 1
        np.testing.assert_array_equal(other.lookup("t", np.array([3])), -np.ones((1, DIM)))
        other.delete_table("t")
        assert [table.name for table in one.list_tables()] == []


def test_eight_threads_through_two_fronts_lose_nothing(cluster_service: Any) -> None:
    fronts = cluster_service(fronts=2)
    with EmbeddingClient(fronts[0].url) as client:
        client.create_table("t", ROWS, DIM, dtype="float64", init="zeros",
                            optimizer={"kind": "sgd", "lr": 1.0})
        pushed: list[int] = []
        failures: list[str] = []
        threads = [threading.Thread(target=worker, args=(
            fronts[n % 2].url, n < THREADS // 2, n, pushed, failures)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert not failures, failures
        client.apply("t")
        expected = np.tile(-float(sum(pushed)) * PATTERN, (ROWS, 1))  # (rows, dim)
        np.testing.assert_array_equal(client.lookup("t", np.arange(ROWS)), expected)
        info = client.get_table("t")
        assert info.pending_rows == 0
