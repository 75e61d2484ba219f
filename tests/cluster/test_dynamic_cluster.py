"""A sharded dynamic table on a real Ray instance answers as one dynamic table in a
single-process service: the same random requests (hashed keys over the whole 64-bit range,
uint64 ids above 2**63 among them, duplicates, admission after 2 pushes, lru capacity with ties
across shards, a ttl, apply=true pushes, .npz weights set) through the SDK that routes each key
to its shard and through a front alone give the same replies and TableInfo figures, and leave
the same table (read from each one's snapshot). Then that snapshot of 2 shards restores into
3, and training goes on bit for bit as the single-process service goes on from its own. And a
killed shard of a dynamic table comes back from its snapshot, losing exactly its changes since."""

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


def test_a_killed_shard_of_a_dynamic_table_comes_back_from_its_snapshot(
        cluster_service: Any, tmp_path: Path) -> None:
    """Shard 1 of a dynamic table (admission after 2 pushes, lru capacity) is killed 3 steps
    after a snapshot; Ray restarts it from its part and the SDK's retries carry training on.
    The oracle: the same shards in this process (tests/cluster/test_dynamic_shard.py's
    protocol) from that snapshot, the 3 steps, shard 1 back to its part, the rest: the table
    the cluster ends with, bit for bit (what it lost is exactly shard 1's changes since)."""
    import ray

    from service.cluster.dynamic_shard import DynamicShardTable
    from service.cluster.journal import Journal
    from service.cluster.placement import Place
    from service.core.sharded_snapshots import read_shard
    from tests.cluster.test_dynamic_shard import Cluster, state_of
    from tests.cluster.test_failure import kill_server

    settings = {"capacity": 40, "evict": "lru", "admit_after": 2}
    spec = {"embedding_dim": 3, "dtype": "float64", "seed": 7,
            "init": {"kind": "normal", "std": 1.0},
            "optimizer": {"kind": "adam", "lr": 0.05, "beta1": 0.8, "beta2": 0.95,
                          "eps": 1e-6}, "dynamic": settings}
    rng = np.random.default_rng(9)
    pool = rng.integers(-(2**63), 2**63 - 1, 60, dtype=np.int64)
    steps = [[(ids, rng.normal(size=(len(ids), 3))) for ids in
              (rng.choice(pool, 10), rng.choice(pool, 10))] for _ in range(10)]

    def train(client: EmbeddingClient | Cluster, batches: list[Any]) -> None:
        for pushes in batches:
            for ids, grads in pushes:
                if isinstance(client, Cluster):
                    client.push(ids, grads)
                else:
                    client.push_gradients("t", ids, grads)
            client.apply() if isinstance(client, Cluster) else client.apply("t")

    data = tmp_path / "data"
    namespace = f"dynamic-failure-{tmp_path.name[-8:]}"
    (front,) = cluster_service(data_dir=data, namespace=namespace)
    with EmbeddingClient(front.url, retries=40, backoff=0.2, max_backoff=1.0) as client:
        client.create_table("t", shards=2, **spec)
        train(client, steps[:4])
        client.snapshot()
        snapshot = data / "tables" / "t"
        snapshot = snapshot / (snapshot / POINTER).read_text().strip()
        shutil.copytree(snapshot, tmp_path / "oracle")
        train(client, steps[4:7])
        kill_server(namespace, 1)
        train(client, steps[7:])
        final = client.export_weights("t")
        info = client.get_table("t")
        losses = ray.get(ray.get_actor("embed-catalog", namespace=namespace)
                         .losses_by_table.remote())
    assert losses == {"restarts": {"t": 1}, "steps": {"t": 3}}

    oracle = Cluster(2, settings, spec["optimizer"])
    oracle.spec = oracle.shards[0].spec

    def part(shard: int) -> DynamicShardTable:
        found = read_shard(tmp_path / "oracle", shard, 2)
        return DynamicShardTable.of_part(oracle.spec, Place(shard, 2, "g"), found,
                                         Journal(100, 600.0, 2**20))

    oracle.shards = [part(0), part(1)]
    train(oracle, steps[4:7])
    oracle.shards[1] = part(1)  # the restart: its part of the snapshot, at the table's step
    oracle.shards[1].commit("", oracle.shards[0].step)
    train(oracle, steps[7:])
    expected = state_of([shard.table for shard in oracle.shards])
    np.testing.assert_array_equal(final.ids, expected["keys"])  # type: ignore[union-attr]
    np.testing.assert_array_equal(final.weights,  # type: ignore[union-attr]
                                  expected["rows"][:, -3:])  # exp_avg, exp_avg_sq, weights
    assert (info.step, info.rows, info.evicted_rows) == (
        expected["step"].pop(), len(expected["keys"]), expected["evicted"])
