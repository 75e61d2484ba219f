"""The cluster-mode side of the benchmarks: a Ray instance of the benchmark's own, and fronts on
it (python -m service.api with EMBED_CLUSTER=ray, joined to that instance), all stopped however
the benchmark ends.

`ray_instance()` starts Ray in this process (ray.cluster_utils: one head node of 2 CPUs, a
256 MB object store) and yields its address; `cluster_front(address)` a front joined to it, with
the benchmark's token and no snapshots; `ray_call_front(address)` bench/_ray_front.py's front,
which reaches the shards by Ray actor calls instead of HTTP (bench/cluster_paths.py measures it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from _processes import TOKEN

from service.api.process import ServiceProcess

NAMESPACE = "bench"


@contextmanager
def ray_instance() -> Iterator[str]:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "object_store_memory": 256 * 2**20})
    try:
        yield str(cluster.address)
    finally:
        cluster.shutdown()


def front_env(address: str, **settings: Any) -> dict[str, str]:
    env = {"EMBED_CLUSTER": "ray", "EMBED_RAY_ADDRESS": address,
           "EMBED_RAY_NAMESPACE": NAMESPACE, "EMBED_TOKEN": TOKEN, "EMBED_LOG_LEVEL": "warning",
           "EMBED_SNAPSHOT_ON_SHUTDOWN": "false", "EMBED_KEEP_ALIVE_SECONDS": "60"}
    env.update({f"EMBED_{key.upper()}": str(value) for key, value in settings.items()})
    return env


@contextmanager
def cluster_front(address: str, **settings: Any) -> Iterator[ServiceProcess]:
    front = ServiceProcess(env=front_env(address, **settings))
    front.start(timeout=300)
    try:
        yield front
    finally:
        front.stop()


@contextmanager
def ray_call_front(address: str) -> Iterator[ServiceProcess]:
    front = ServiceProcess(env=front_env(address), app="bench._ray_front:app")
    front.start(timeout=300)
    try:
        yield front
    finally:
        front.stop()
