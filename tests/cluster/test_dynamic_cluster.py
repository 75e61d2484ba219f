"""A sharded dynamic table on a real Ray instance answers as one dynamic table in a
single-process service: the same random requests (hashed keys over the whole 64-bit range,
uint64 ids above 2**63 among them, duplicates, admission after 2 pushes, lru capacity with ties
across shards, a ttl, apply=true pushes, .npz weights set) through the SDK that routes each key
to its shard and through a front alone give the same replies and TableInfo figures, and leave
the same table (read from each one's snapshot). Then that snapshot of 2 shards restores into
3, and training goes on bit for bit as the single-process service goes on from its own."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from service.api.process import ServiceProcess
from service.client import EmbeddingClient
from service.core.dynamic import DynamicTable
from service.core.sharded_snapshots import is_sharded, read_sharded_table
from service.core.snapshot_store import POINTER
from service.core.snapshots import read_table
from tests.cluster.test_dynamic_shard import assert_same
from tests.cluster_fixtures import end_namespace

DIM = 4
SPEC = {"embedding_dim": DIM, "dtype": "float64", "seed": 3,
        "optimizer": {"kind": "adam", "lr": 0.05},
        "dynamic": {"capacity": 14, "evict": "lru", "admit_after": 2, "ttl_steps": 6}}


def requests(seed: int, count: int) -> list[tuple[str, dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    pool = np.concatenate([rng.integers(-(2**63), 2**63 - 1, 24, dtype=np.int64),
                           rng.integers(2**63, 2**64 - 1, 6, dtype=np.uint64).view(np.int64)])
    made: list[tuple[str, dict[str, Any]]] = []
    for _ in range(count):
        kind = rng.choice(["push", "push", "apply", "async", "lookup", "set"])
        ids = rng.choice(pool, int(rng.integers(1, 12)))
        if kind == "lookup":
            made.append(("lookup", {"ids": rng.choice(pool, (2, 3)).view(np.uint64)}))
        elif kind == "apply":
            made.append(("apply", {}))
        elif kind == "set":
            keys = np.unique(ids)
            made.append(("set", {"ids": keys, "weights": rng.standard_normal((len(keys), DIM))}))
        else:
            made.append(("push", {"ids": ids, "grads": rng.standard_normal((len(ids), DIM)),
                                  "apply": kind == "async"}))
    return made


def replay(client: EmbeddingClient, table: str, made: list[tuple[str, dict[str, Any]]]
           ) -> list[Any]:
    replies: list[Any] = []
    for operation, fields in made:
        if operation == "lookup":
            found = client.lookup_with_step(table, fields["ids"])
            replies.append((found.vectors.tobytes(), found.step))
        elif operation == "apply":
            done = client.apply(table)
            replies.append((done.step, done.rows_updated))
        elif operation == "set":
            client.import_weights(table, fields["weights"], ids=fields["ids"])
            replies.append("set")
        else:
            pushed = client.push_gradients(table, fields["ids"], fields["grads"],
                                           apply=fields["apply"])
            replies.append((pushed.rows, pushed.pending_rows, pushed.step,
                            pushed.rows_updated, pushed.dropped_rows))
        info = client.get_table(table)
        replies.append((info.step, info.rows, info.evicted_rows, info.pending_rows))
    exported = client.export_weights(table)
    replies.append((exported.ids.tobytes(), exported.weights.tobytes()))  # type: ignore[union-attr]
    return replies


def committed(data_dir: Path, table: str) -> DynamicTable:
    snapshot = data_dir / "tables" / table
    snapshot = snapshot / (snapshot / POINTER).read_text().strip()
    found = read_sharded_table(snapshot) if is_sharded(snapshot) else read_table(snapshot)
    assert isinstance(found, DynamicTable)
    return found


def test_a_sharded_dynamic_table_is_one_dynamic_table(cluster_service: Any,
                                                      tmp_path: Path) -> None:
    made = requests(seed=5, count=45)
    single_dir, cluster_dir = tmp_path / "single", tmp_path / "cluster"
    (front,) = cluster_service(data_dir=cluster_dir, namespace="dynamic-2")
    with ServiceProcess(env={"EMBED_DATA_DIR": str(single_dir),
                             "EMBED_LOG_LEVEL": "warning"}) as single, \
            EmbeddingClient(single.url) as reference, \
            EmbeddingClient(front.url) as routed, \
            EmbeddingClient(front.url, route_to_shards=False) as fronted:
        reference.create_table("t", **SPEC)
        routed.create_table("t", shards=2, **SPEC)
        fronted.create_table("fronted", shards=2, **SPEC)
        expected = replay(reference, "t", made)
        assert any(isinstance(reply, tuple) and len(reply) == 4 and reply[2] > 0
                   for reply in expected), "no eviction happened"
        assert replay(routed, "t", made) == expected
        assert "t" in routed._router.maps  # the SDK did send to the shards
        assert replay(fronted, "fronted", made) == expected
        reference.snapshot()
        routed.snapshot()
    assert_same(committed(single_dir, "t"), [committed(cluster_dir, "t")])
    assert_same(committed(single_dir, "t"), [committed(cluster_dir, "fronted")])

    # the 2 shards' snapshot restores into 3; training goes on as in the single process
    front.stop()
    end_namespace("dynamic-2")
    more = requests(seed=6, count=15)
    (again,) = cluster_service(data_dir=cluster_dir, namespace="dynamic-3", restore_shards=3)
    oracle = tmp_path / "oracle"
    shutil.copytree(single_dir, oracle)
    with ServiceProcess(env={"EMBED_DATA_DIR": str(oracle), "EMBED_LOG_LEVEL": "warning"}
                        ) as single, EmbeddingClient(single.url) as reference, \
            EmbeddingClient(again.url) as routed:
        assert routed.get_table("t").shards == 3
        assert replay(routed, "t", more) == replay(reference, "t", more)
