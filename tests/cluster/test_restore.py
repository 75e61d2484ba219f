"""A table's snapshot restores into another shard count, and into or out of a single-process
service, and training goes on from it bit for bit as it would have (Adam: its moments and the
table's step travel with the rows).

The data directory is one service's at a time (its catalog holds its lock): each service here
is stopped, its actors with it, before the next one opens the directory.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from service.api.process import ServiceProcess
from service.client import EmbeddingClient
from tests.cluster_fixtures import end_namespace

ROWS, DIM = 120, 5
SPEC = {"num_embeddings": ROWS, "embedding_dim": DIM, "seed": 11,
        "optimizer": {"kind": "adam", "lr": 0.05}}


def steps(seed: int, count: int, client: EmbeddingClient) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(count):
        ids = rng.integers(0, ROWS, 40)
        client.push_gradients("t", ids, rng.standard_normal((40, DIM)))
        client.apply("t")
    client.push_gradients("t", rng.integers(0, ROWS, 9), rng.standard_normal((9, DIM)))


def single_after(data_dir: Path) -> tuple[np.ndarray, int, int]:
    """A single-process service restored from data_dir, trained on: weights, step, pending."""
    with ServiceProcess(env={"EMBED_DATA_DIR": str(data_dir), "EMBED_LOG_LEVEL": "warning"}
                        ) as single, EmbeddingClient(single.url) as client:
        return trained_on(client)


def trained_on(client: EmbeddingClient) -> tuple[np.ndarray, int, int]:
    """Three more steps and a pending push, the same on every side: weights, step, pending."""
    steps(2, 3, client)
    info = client.get_table("t")
    return client.export_weights("t").copy(), info.step, info.pending_rows


def assert_goes_on_as_single(ours: tuple[np.ndarray, int, int], oracle: Path) -> None:
    """`ours` (trained_on a restored cluster) is what a single-process service restored from
    the same snapshot (`oracle`, a copy of the data directory) gets, bit for bit."""
    expected = single_after(oracle)
    np.testing.assert_array_equal(ours[0], expected[0])
    assert ours[1:] == expected[1:]


def test_two_shards_restore_as_three(cluster_service: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (front,) = cluster_service(data_dir=data, namespace="restore-2")
    with EmbeddingClient(front.url) as client:
        client.create_table("t", **SPEC)
        steps(1, 4, client)
        client.snapshot()  # 2 shards, with a pending gradient
        before = client.export_weights("t").copy()
    front.stop()
    end_namespace("restore-2")
    oracle = tmp_path / "oracle"
    shutil.copytree(data, oracle)
    (again,) = cluster_service(data_dir=data, namespace="restore-3", restore_shards=3)
    with EmbeddingClient(again.url) as client:
        info = client.get_table("t")
        assert (info.shards, info.step) == (3, 4)
        np.testing.assert_array_equal(client.export_weights("t"), before)
        ours = trained_on(client)
    assert_goes_on_as_single(ours, oracle)


def test_a_single_process_snapshot_restores_sharded(cluster_service: Any,
                                                     tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServiceProcess(env={"EMBED_DATA_DIR": str(data), "EMBED_LOG_LEVEL": "warning"}
                        ) as single, EmbeddingClient(single.url) as client:
        client.create_table("t", **SPEC)
        steps(1, 4, client)
        before = client.export_weights("t").copy()
    oracle = tmp_path / "oracle"  # the single-process service snapshotted on stopping
    shutil.copytree(data, oracle)
    (front,) = cluster_service(data_dir=data, shards=3)
    with EmbeddingClient(front.url) as client:
        assert client.get_table("t").shards == 3
        np.testing.assert_array_equal(client.export_weights("t"), before)
        ours = trained_on(client)
    assert_goes_on_as_single(ours, oracle)
