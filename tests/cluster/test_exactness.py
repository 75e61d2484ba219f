"""Cluster mode answers as the single-process service does: the same random requests sent to a
single-process service and to a cluster-mode one (tables of 2 and 3 shards), through the SDK
that routes each id to its shard and through a front alone, give the same replies, bit for bit,
and leave the same weights, optimizer state, step and pending gradient (read from each one's
snapshot, the cluster's put back together by the core: service.core.sharded_snapshots).

The requests cover what makes a sharded step hard: duplicate ids in a push, pushes whose ids
all land on one shard, empty pushes (counted for average=True), applies with nothing pending,
lr overrides, average=True (the table's push count divides), asynchronous pushes (each a step of
the whole table: Adam's bias correction sees one step number), staleness-checked pushes, and
lookups of any shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.api.process import ServiceProcess
from service.client import EmbeddingClient, EmbeddingClientError
from service.core.sharded_snapshots import is_sharded, read_sharded_table
from service.core.snapshot_store import POINTER
from service.core.snapshots import read_table
from service.core.table import EmbeddingTable
from tests.same_table import assert_same_table

ROWS, DIM = 50, 6


def requests(seed: int) -> list[tuple[str, dict[str, Any]]]:
    """A reproducible sequence of table operations (no network in here)."""
    rng = np.random.default_rng(seed)
    made: list[tuple[str, dict[str, Any]]] = []
    for _ in range(40):
        kind = rng.choice(["push", "push", "push", "apply", "async", "lookup", "stepped"])
        size = int(rng.choice([0, 1, 3, 17, 64]))
        ids = rng.integers(0, ROWS, size)
        if rng.random() < 0.2 and size:  # all of a push's ids on one shard: one id, repeated
            ids = np.full(size, ids[0])
        grads = rng.standard_normal((size, DIM))
        if kind == "lookup":
            made.append(("lookup", {"ids": rng.integers(0, ROWS, (2, 3))}))
        elif kind == "apply":
            made.append(("apply", {"lr": float(rng.choice([0.05, 0.3])) if rng.random() < 0.3
                                   else None, "average": bool(rng.random() < 0.4)}))
        else:
            made.append(("push", {"ids": ids, "grads": grads, "apply": kind == "async",
                                  "step": 0 if kind == "stepped" else None}))
    return made


def replay(client: EmbeddingClient, table: str, made: list[tuple[str, dict[str, Any]]]
           ) -> list[Any]:
    replies: list[Any] = []
    for operation, fields in made:
        try:
            if operation == "lookup":
                found = client.lookup_with_step(table, fields["ids"])
                replies.append((found.vectors.tobytes(), found.vectors.shape, found.step))
            elif operation == "apply":
                done = client.apply(table, lr=fields["lr"], average=fields["average"])
                replies.append((done.step, done.rows_updated))
            else:
                pushed = client.push_gradients(table, fields["ids"], fields["grads"],
                                               apply=fields["apply"], step=fields["step"])
                replies.append((pushed.rows, pushed.pending_rows, pushed.step,
                                pushed.rows_updated))
        except EmbeddingClientError as error:  # a stale step: refused alike (but its name)
            replies.append((type(error).__name__, error.status,
                            error.detail.replace(repr(table), "'t'")))
    return replies


def committed(data_dir: Path, table: str) -> EmbeddingTable:
    snapshot = data_dir / "tables" / table
    snapshot = snapshot / (snapshot / POINTER).read_text().strip()
    return read_sharded_table(snapshot) if is_sharded(snapshot) else read_table(snapshot)


@pytest.mark.parametrize(("optimizer", "dtype", "shards"), [
    ({"kind": "adam", "lr": 0.01}, "float32", 2),
    ({"kind": "adagrad", "lr": 0.1}, "float64", 3),
    ({"kind": "momentum", "lr": 0.05}, "float32", 3),
    ({"kind": "sgd", "lr": 0.1}, "float64", 2),
])
def test_same_requests_same_bits(cluster_service: Any, tmp_path: Path,
                                 optimizer: dict[str, Any], dtype: str, shards: int) -> None:
    made = requests(seed=shards + len(optimizer["kind"]))
    spec = {"num_embeddings": ROWS, "embedding_dim": DIM, "dtype": dtype, "seed": 7,
            "optimizer": optimizer, "max_staleness": 3}
    single_dir = tmp_path / "single"
    (front,) = cluster_service(data_dir=tmp_path / "cluster")
    with ServiceProcess(env={"EMBED_DATA_DIR": str(single_dir),
                             "EMBED_LOG_LEVEL": "warning"}) as single, \
            EmbeddingClient(single.url) as reference, \
            EmbeddingClient(front.url) as routed, \
            EmbeddingClient(front.url, route_to_shards=False) as fronted:
        reference.create_table("t", **spec)
        routed.create_table("routed", shards=shards, **spec)
        fronted.create_table("fronted", shards=shards, **spec)
        expected = replay(reference, "t", made)
        assert replay(routed, "routed", made) == expected
        assert "routed" in routed._router.maps  # the SDK did send to the shards
        assert replay(fronted, "fronted", made) == expected
        assert not fronted._router.maps
        for client in (reference, routed):
            client.snapshot()
    oracle = committed(single_dir, "t")
    for table in ("routed", "fronted"):
        assert_same_table(committed(tmp_path / "cluster", table), oracle)
