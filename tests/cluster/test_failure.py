"""Shard servers that die come back from their table's last snapshot, and training goes on.

A multi-node cluster on this machine (ray.cluster_utils: the session's head, plus worker nodes
added here with the resource the shard servers ask for, so they run on those nodes only).
Training runs through the SDK (it routes to the shards, and on a failure goes through the
front, which answers 503 with Retry-After until the shard serves again; the SDK retries). A
shard server is killed (or its node removed) between two steps, after a snapshot and a few
more steps; it is restarted by Ray on a live node and restores the snapshot.

The oracle is a single-process service started on a copy of that snapshot (it reads the
cluster's sharded snapshot whole): it replays the steps after the snapshot, then the restarted
shard's rows are put back to the snapshot's values (what the shard lost: the updates of those
steps to its rows), then it replays the rest. The final weights must be the cluster's, bit for
bit: nothing else lost, nothing applied twice (the retried requests carry Idempotency-Keys).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.api.process import ServiceProcess
from service.client import EmbeddingClient
from service.sharding import shard_of

ROWS, DIM = 300, 8
SPEC = {"num_embeddings": ROWS, "embedding_dim": DIM, "seed": 3,
        "optimizer": {"kind": "sgd", "lr": 0.1}}
RESOURCE = "embed_shards_failure_test"


def batches(seed: int, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, ROWS, 64), rng.standard_normal((64, DIM)).astype(np.float32))
            for _ in range(count)]


def train(client: EmbeddingClient, steps: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for ids, grads in steps:
        client.lookup("t", ids)
        client.push_gradients("t", ids, grads)
        client.apply("t")


def catalog_of(namespace: str) -> Any:
    import ray

    return ray.get_actor("embed-catalog", namespace=namespace)


def server_of(namespace: str, shard: int) -> Any:
    import ray

    described = ray.get(catalog_of(namespace).describe.remote("t"))
    return ray.get_actor(described["servers"][shard], namespace=namespace)


def wait_for_exit(pid: int, timeout: float = 60.0) -> None:
    """Until the process is gone (ray.kill returns before it is): a push it still answered
    would be lost with it, as the README says, but the oracle would not know."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise TimeoutError(f"process {pid} did not exit")


def oracle_weights(snapshot_dir: Path, after_snapshot: list[tuple[np.ndarray, np.ndarray]],
                   restart_at: int, lost: list[int], shards: int) -> np.ndarray:
    """A single-process service on the snapshot: the steps after it, the lost shards' rows
    back to the snapshot's, the remaining steps."""
    with ServiceProcess(env={"EMBED_DATA_DIR": str(snapshot_dir),
                             "EMBED_LOG_LEVEL": "warning"}) as single, \
            EmbeddingClient(single.url) as client:
        at_snapshot = client.export_weights("t").copy()
        train(client, after_snapshot[:restart_at])
        weights = client.export_weights("t").copy()
        reset = np.isin(shard_of(np.arange(ROWS), shards), lost)
        weights[reset] = at_snapshot[reset]
        client.import_weights("t", weights)
        train(client, after_snapshot[restart_at:])
        return client.export_weights("t")


def run(cluster_service: Callable[..., list[ServiceProcess]], tmp_path: Path,
        fail: Callable[[str], list[int]]) -> None:
    """Train, snapshot, train 3 steps, `fail` (returns the shards it took down), train on."""
    data_dir = tmp_path / "data"
    namespace = f"failure-{tmp_path.name[-8:]}"
    (front,) = cluster_service(data_dir=data_dir, namespace=namespace,
                               ray_shard_resources=f'{{"{RESOURCE}": 1}}')
    before, after = batches(1, 4), batches(2, 8)
    with EmbeddingClient(front.url, retries=40, backoff=0.2, max_backoff=1.0) as client:
        client.create_table("t", **SPEC)
        train(client, before)
        client.snapshot()
        shutil.copytree(data_dir / "tables", tmp_path / "oracle" / "tables")
        train(client, after[:3])
        lost = fail(namespace)  # between two steps: the 3 steps since the snapshot are lost
        train(client, after[3:])  # the first requests wait out the restart (503, retried)
        final = client.export_weights("t")
        # every shard lost: the table is its snapshot again (3 steps fewer)
        steps = len(before) + len(after) - (3 if len(lost) == 2 else 0)
        assert client.get_table("t").step == steps
        assert "t" in client._router.maps  # routing by key resumed after the restart
    expected = oracle_weights(tmp_path / "oracle", after, 3, lost, 2)
    np.testing.assert_array_equal(final, expected)
    import ray

    losses = ray.get(catalog_of(namespace).losses_by_table.remote())
    # steps lost are counted against the step the table's other shards kept: none is left
    # when every shard restarted (the table is back at its snapshot as a whole)
    assert losses == {"restarts": {"t": len(lost)}, "steps": {"t": 3 if len(lost) == 1 else 0}}
    text = httpx.get(f"{front.url}/metrics", timeout=30).text  # what an operator reads
    assert f'embed_cluster_shard_restarts_total{{table="t"}} {float(len(lost))}' in text
    assert (f'embed_cluster_lost_steps_total{{table="t"}} '
            f'{float(3 if len(lost) == 1 else 0)}') in text


@pytest.fixture
def shard_nodes(ray_cluster: Any) -> Any:
    """Two worker nodes with the resource the shard servers of these tests ask for."""
    nodes = [ray_cluster.add_node(num_cpus=1, resources={RESOURCE: 100}) for _ in range(2)]
    ray_cluster.wait_for_nodes()
    yield nodes
    for node in nodes:
        if node in ray_cluster.worker_nodes:
            ray_cluster.remove_node(node)


def kill_server(namespace: str, shard: int) -> None:
    import ray

    server = server_of(namespace, shard)
    pid = ray.get(server.report.remote())["pid"]
    ray.kill(server, no_restart=False)  # Ray starts it again: max_restarts
    wait_for_exit(pid)


def test_a_killed_shard_server_restores_its_snapshot(
        shard_nodes: Any, cluster_service: Any, tmp_path: Path) -> None:
    def fail(namespace: str) -> list[int]:
        kill_server(namespace, 1)
        return [1]

    run(cluster_service, tmp_path, fail)


def test_a_killed_leader_takes_the_table_s_step_from_its_peer(
        shard_nodes: Any, cluster_service: Any, tmp_path: Path) -> None:
    """Shard 0 numbers the steps; back from a snapshot 3 steps old, it learns the step from
    shard 1 (which kept training), so the next step is the table's next, not its snapshot's."""
    def fail(namespace: str) -> list[int]:
        kill_server(namespace, 0)
        return [0]

    run(cluster_service, tmp_path, fail)


def test_a_lost_node_s_shards_come_back_on_another(
        shard_nodes: Any, ray_cluster: Any, cluster_service: Any, tmp_path: Path) -> None:
    """The node holding shard 0 goes (and shard 1 with it, if Ray put both there): its servers
    start again on the other node and restore the snapshot."""
    import ray

    def fail(namespace: str) -> list[int]:
        reports = [ray.get(server_of(namespace, shard).report.remote()) for shard in (0, 1)]
        node = next(node for node in shard_nodes if node.node_id == reports[0]["node"])
        ray_cluster.remove_node(node, allow_graceful=False)
        lost = [shard for shard, report in enumerate(reports) if report["node"] == node.node_id]
        for shard in lost:
            wait_for_exit(reports[shard]["pid"])
        return lost

    run(cluster_service, tmp_path, fail)
