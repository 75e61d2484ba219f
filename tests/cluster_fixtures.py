"""Cluster mode under test: one real Ray instance for the whole session, fronts joining it.

`ray_cluster` starts Ray once (ray.cluster_utils.Cluster: a head node, 2 CPUs; the multi-node
tests add and remove nodes on it) and connects this process as a driver, so tests can reach
the actors (kill one, list them). `cluster_front` is a front (python -m service.api with
EMBED_CLUSTER=ray) on it, shared by the session as the uvicorn live server is; the API suite
runs against it as a third transport (tests/conftest.py's `api`). `cluster_service` makes more:
fronts of a namespace (a service) of their own, each with its own data directory and catalog,
torn down with every actor of that namespace at the end of the test.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.api.process import ServiceProcess

SESSION_NAMESPACE = "api-suite"


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "object_store_memory": 200 * 2**20})
    ray.init(address=cluster.address, namespace="tests", logging_level="warning",
             configure_logging=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def front_env(cluster: Any, namespace: str, data_dir: Path, **settings: Any) -> dict[str, str]:
    env = {"EMBED_CLUSTER": "ray", "EMBED_RAY_ADDRESS": cluster.address,
           "EMBED_RAY_NAMESPACE": namespace, "EMBED_DATA_DIR": str(data_dir),
           "EMBED_LOG_LEVEL": "warning", "EMBED_SHARDS": "2"}
    env.update({f"EMBED_{key.upper()}": str(value) for key, value in settings.items()})
    return env


def end_namespace(namespace: str) -> None:
    """Stop every actor of a service (its catalog and shard servers: detached, they outlive
    the fronts that joined)."""
    import ray

    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == namespace:
            with contextlib.suppress(Exception):
                ray.kill(ray.get_actor(actor["name"], namespace=namespace), no_restart=True)


@pytest.fixture(scope="session")
def cluster_front(ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[ServiceProcess]:
    data_dir = tmp_path_factory.mktemp("cluster-data")
    front = ServiceProcess(env=front_env(ray_cluster, SESSION_NAMESPACE, data_dir))
    front.start(timeout=180)
    try:
        yield front
    finally:
        front.stop()
        end_namespace(SESSION_NAMESPACE)


ServiceFactory = Callable[..., list[ServiceProcess]]


@pytest.fixture
def cluster_service(ray_cluster: Any, tmp_path: Path) -> Iterator[ServiceFactory]:
    """Factory: cluster_service(fronts=2, data_dir=..., namespace=..., **settings) starts that
    many fronts of one service (a namespace of its own) and returns them; everything it
    started is stopped at the end of the test (fronts first, then the namespace's actors)."""
    started: list[ServiceProcess] = []
    namespaces: set[str] = set()

    def start(fronts: int = 1, data_dir: Path | None = None, namespace: str | None = None,
              **settings: Any) -> list[ServiceProcess]:
        namespace = namespace or f"test-{uuid.uuid4().hex[:8]}"
        namespaces.add(namespace)
        env = front_env(ray_cluster, namespace, data_dir or tmp_path / "data", **settings)
        made = []
        for _ in range(fronts):
            front = ServiceProcess(env=env)
            started.append(front)
            made.append(front.start(timeout=180))
        return made

    try:
        yield start
    finally:
        for front in started:
            front.stop()
        for namespace in namespaces:
            end_namespace(namespace)
