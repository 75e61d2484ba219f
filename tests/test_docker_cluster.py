"""docker-compose.cluster.yml as a user runs it: a Ray head, two Ray worker nodes, two fronts,
real images and containers; a trainer trains through the SDK while the worker node holding the
table's leader shard is killed (docker kill), and keeps training: the shard servers start again
on the other node from the last snapshot, the SDK's retries carry the trainer through, and both
fronts serve the table afterwards. Everything is torn down after (down -v, the tag removed).

Needs a Docker engine, as tests/test_docker.py (which it borrows from): skips loudly without
one, fails under CI.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid

import httpx
import numpy as np
import pytest

from service.client import EmbeddingClient
from tests.conftest import ROOT, free_port
from tests.test_docker import BUILD_SECONDS, compose_command, docker, missing_engine, say_loudly

COMPOSE_FILE = ROOT / "docker-compose.cluster.yml"
FRONTS = ("front-1", "front-2")
STEPS, ROWS, DIM = 60, 2000, 16


class ClusterStack:
    """docker-compose.cluster.yml under a project of its own, its image under a tag of its own."""

    def __init__(self) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.project = f"embedcluster{suffix}"
        self.image = f"embedding-service-cluster:test-{suffix}"
        self.ports = {front: free_port() for front in FRONTS}
        self.urls = {front: f"http://127.0.0.1:{port}" for front, port in self.ports.items()}
        self.compose = compose_command() or ["docker-compose"]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("EMBED_", "RAY_"))}
        self.env |= {"EMBED_CLUSTER_IMAGE": self.image, "EMBED_HOST_ADDRESS": "127.0.0.1",
                     "EMBED_FRONT_1_PORT": str(self.ports["front-1"]),
                     "EMBED_FRONT_2_PORT": str(self.ports["front-2"]),
                     "EMBED_SNAPSHOT_INTERVAL_SECONDS": "0", "EMBED_LOG_LEVEL": "warning"}

    def run(self, *args: str, timeout: float = 300) -> str:
        command = [*self.compose, "-f", str(COMPOSE_FILE), "-p", self.project, *args]
        done = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}:\n"
                               f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done.stdout

    def container(self, service: str) -> str:
        return self.run("ps", "-q", service).strip()

    def logs(self) -> str:
        try:
            return self.run("logs", "--no-color", "--tail", "40")
        except RuntimeError as error:
            return str(error)

    def wait_healthy(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        states: list[str] = []
        while time.monotonic() < deadline:
            states = [docker("inspect", "-f", "{{.State.Status}} {{.State.Health.Status}}",
                             self.container(front)) for front in FRONTS]
            if all(state == "running healthy" for state in states):
                return
            time.sleep(1)
        raise AssertionError(f"fronts not healthy after {timeout} s ({states}):\n{self.logs()}")

    def tear_down(self) -> None:
        try:
            self.run("down", "--volumes", "--remove-orphans", "--timeout", "60", timeout=300)
        finally:
            subprocess.run(["docker", "rmi", "--no-prune", self.image], capture_output=True)


@pytest.fixture(scope="module")
def cluster_stack(request: pytest.FixtureRequest) -> ClusterStack:
    reason = missing_engine()
    if reason is not None:
        message = f"DOCKER TESTS NOT RUN: {reason}; docs/development.md says how to get one."
        say_loudly(request.config, f"WARNING: {message}")
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    stack = ClusterStack()
    request.addfinalizer(stack.tear_down)
    stack.run("build", timeout=BUILD_SECONDS)
    stack.run("up", "-d")
    stack.wait_healthy()
    return stack


def container_of_ip(stack: ClusterStack, ip: str) -> str:
    """The worker container whose address the shard server gave out."""
    for service in ("ray-worker-1", "ray-worker-2"):
        container = stack.container(service)
        addresses = docker("inspect", "-f",
                           "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", container)
        if ip in addresses.split():
            return container
    raise AssertionError(f"no worker container has address {ip}")


@pytest.mark.docker
@pytest.mark.timeout(BUILD_SECONDS + 900)
def test_training_survives_a_killed_worker_node(cluster_stack: ClusterStack) -> None:
    first, second = (cluster_stack.urls[front] for front in FRONTS)
    rng = np.random.default_rng(0)
    failures: list[str] = []
    done_steps: list[int] = []
    with EmbeddingClient(first, retries=60, backoff=0.2, max_backoff=2.0) as client:
        client.create_table("t", ROWS, DIM, seed=1, optimizer={"kind": "sgd", "lr": 0.1},
                            shards=2)
        shards = client._send(client._requests.shard_map("t"))["urls"]  # noqa: SLF001
        assert len(shards) == 2

        def train() -> None:
            try:
                for step in range(STEPS):
                    ids = rng.integers(0, ROWS, 256)
                    client.lookup("t", ids)
                    client.push_gradients("t", ids, rng.standard_normal((256, DIM)))
                    client.apply("t")
                    done_steps.append(step)
                    if step == 10:
                        client.snapshot()
                    time.sleep(0.05)
            except Exception as error:  # noqa: BLE001 - reported by the test
                failures.append(f"{type(error).__name__}: {error}")

        trainer = threading.Thread(target=train)
        trainer.start()
        while len(done_steps) < 20 and trainer.is_alive():
            time.sleep(0.1)
        leader_ip = httpx.URL(shards[0]).host
        docker("kill", container_of_ip(cluster_stack, leader_ip))  # the node, mid-training
        trainer.join(600)
        assert not failures, (failures, cluster_stack.logs())
        assert len(done_steps) == STEPS
        info = client.get_table("t")
    with EmbeddingClient(second) as other:  # the other front serves the same table
        assert other.get_table("t").step == info.step
        assert other.lookup("t", np.arange(ROWS)).shape == (ROWS, DIM)
    restarts = [line for line in httpx.get(f"{first}/metrics").text.splitlines()
                if line.startswith('embed_cluster_shard_restarts_total{table="t"}')]
    assert restarts and float(restarts[0].split()[-1]) >= 1, restarts
