"""Shared fixtures: the app in-process (ASGI) and a real uvicorn process on a loopback port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from service.api.main import create_app
from service.api.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """A uvicorn process serving the app on 127.0.0.1, stopped (SIGTERM) when done."""

    def __init__(self, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.own_data_dir: Path | None = None
        if "EMBED_DATA_DIR" not in (env or {}):  # snapshots never land in the repo's ./data
            self.own_data_dir = Path(tempfile.mkdtemp(prefix="embed-data-"))
            self.env["EMBED_DATA_DIR"] = str(self.own_data_dir)
        self.cwd = cwd or ROOT
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="uvicorn-", suffix=".log")[1])

    def start(self, timeout: float = 30.0) -> LiveServer:
        with open(self.log_path, "ab") as log:  # a file, not a pipe: a full pipe would block it
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "service.api.main:app", "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", "1", "--log-level", "warning"],
                env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"uvicorn exited with {self.process.returncode}:\n{self.output()}"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"uvicorn did not answer on {self.url} within {timeout} s")

    def stop(self, timeout: float = 30.0) -> int | None:
        try:
            if self.process is None or self.process.poll() is not None:
                return None if self.process is None else self.process.returncode
            self.process.terminate()
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                return self.process.wait()
        finally:
            if self.own_data_dir is not None:
                shutil.rmtree(self.own_data_dir, ignore_errors=True)

    def output(self) -> str:
        """What the process has printed so far."""
        return self.log_path.read_text(errors="replace")


@pytest.fixture(autouse=True)
def _data_dir_outside_the_repo(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Apps built from Settings() directly restore from and snapshot into a fresh temporary
    directory, never the repo's ./data (which would carry tables from one run to the next)."""
    monkeypatch.setenv("EMBED_DATA_DIR", str(tmp_path_factory.mktemp("env-data")))


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


@pytest.fixture(params=["asgi", "uvicorn"])
def api(request: pytest.FixtureRequest, make_app: Callable[..., FastAPI]) -> Iterator[httpx.Client]:
    """The same tests over both transports: the app in-process, and a real uvicorn process."""
    if request.param == "asgi":
        with TestClient(make_app()) as client:
            yield client
    else:
        server: LiveServer = request.getfixturevalue("live_server")
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            yield client


@pytest.fixture
def table_name() -> str:
    """A name no other test uses (the uvicorn server is shared by the session)."""
    return f"t-{uuid.uuid4().hex[:12]}"
