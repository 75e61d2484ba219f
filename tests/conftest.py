"""Shared fixtures: the app in-process (ASGI) and a real uvicorn process on a loopback port."""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from service.api.main import create_app
from service.api.process import ServiceProcess, free_port
from service.api.settings import Settings
from service.core import kernels
from tests.cluster_fixtures import cluster_front, cluster_service, ray_cluster  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
__all__ = ["ROOT", "LiveServer", "free_port"]


# A real uvicorn process, started as in production (python -m service.api) on a free port.
LiveServer = ServiceProcess


@pytest.fixture(autouse=True)
def _data_dir_outside_the_repo(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Apps built from Settings() directly restore from and snapshot into a fresh temporary
    directory, never the repo's ./data (which would carry tables from one run to the next)."""
    monkeypatch.setenv("EMBED_DATA_DIR", str(tmp_path_factory.mktemp("env-data")))


@pytest.fixture(params=kernels.BACKENDS)
def kernel_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test once on each kernel backend (numba, numpy); the default afterwards."""
    kernels.use(request.param)
    yield request.param
    kernels.use(kernels.DEFAULT)


@pytest.fixture(params=["fixed", "dynamic"])
def table_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test on a fixed table and on a dynamic one: tests.api.helpers.create makes the
    table of this kind (see there). Suites that apply to both kinds use it."""
    from tests.api import helpers

    monkeypatch.setattr(helpers, "TABLE_KIND", request.param)
    return str(request.param)


@pytest.fixture
def make_app(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., FastAPI]:
    """Factory: a fresh app with settings overridden by keyword, e.g. make_app(max_tables=2).
    Each app gets its own empty data_dir unless one is given (make_app(data_dir=tmp_path))."""

    def build(**overrides: Any) -> FastAPI:
        overrides.setdefault("data_dir", tmp_path_factory.mktemp("data"))
        return create_app(Settings(**overrides))

    return build


@pytest.fixture
def asgi_client(make_app: Callable[..., FastAPI]) -> Iterator[TestClient]:
    with TestClient(make_app()) as client:
        yield client


@pytest.fixture(scope="session")
def live_server() -> Iterator[LiveServer]:
    server = LiveServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["asgi", "uvicorn", "cluster"])
def api(request: pytest.FixtureRequest, make_app: Callable[..., FastAPI]) -> Iterator[httpx.Client]:
    """The same tests over three transports: the app in-process, a real uvicorn process, and a
    cluster-mode front on a real Ray instance (tables of 2 shards; tests/cluster_fixtures.py).
    A table a cluster test made is deleted after it (its shard servers go back to the pool)."""
    if request.param == "asgi":
        with TestClient(make_app()) as client:
            yield client
    elif request.param == "uvicorn":
        server: LiveServer = request.getfixturevalue("live_server")
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            yield client
    else:
        front: LiveServer = request.getfixturevalue("cluster_front")
        with httpx.Client(base_url=front.url, timeout=120.0) as client:
            before = {table["name"] for table in client.get("/v1/tables").json()["tables"]}
            yield client
            for table in client.get("/v1/tables").json()["tables"]:
                if table["name"] not in before:
                    client.delete(f"/v1/tables/{table['name']}")


@pytest.fixture
def table_name() -> str:
    """A name no other test uses (the uvicorn server is shared by the session)."""
    return f"t-{uuid.uuid4().hex[:12]}"
