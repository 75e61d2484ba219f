"""The service in a child process on a free loopback port: what the tests' live servers, the
word2vec example's --serve and bench/compare.py start (one helper instead of three copies).

The child runs `python -m service.api --fd N` (service.api.server: the production start flags) on
a socket this process bound to port 0 and hands over, so no other process can take the port
between choosing and binding it. Unless `env` names EMBED_DATA_DIR, the child gets a data
directory of its own, removed when it stops; its output goes to a file (a pipe nobody reads
would fill up and block it).

    with ServiceProcess(env={"EMBED_TOKEN": "secret"}) as service:
        httpx.get(f"{service.url}/healthz")           # 200
    service.output()                                  # what it logged (JSON lines)

Only the standard library here: the example imports it without the server's dependencies
being loaded into its own process.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import service

# where `service` is importable from, whatever the caller's working directory
SOURCE_ROOT = Path(service.__file__).resolve().parents[1]


def free_port() -> int:
    """A port free on 127.0.0.1 now (for what cannot take a socket, such as a docker -p)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    """`python -m service.api` in a child process on 127.0.0.1; `env` adds EMBED_* variables;
    `app` ("module:attribute", importable from `cwd`) serves another ASGI app on the same
    server configuration (it must answer GET /healthz with 200)."""

    def __init__(
        self, env: Mapping[str, str] | None = None, cwd: Path | None = None,
        app: str | None = None,
    ) -> None:
        self.app = app  # "module:attribute": another ASGI app on the service's server flags
        self.env = {**os.environ, **(env or {})}
        self.own_data_dir: Path | None = None
        if "EMBED_DATA_DIR" not in (env or {}):  # snapshots never land in the caller's ./data
            self.own_data_dir = Path(tempfile.mkdtemp(prefix="embed-data-"))
            self.env["EMBED_DATA_DIR"] = str(self.own_data_dir)
        self.cwd = cwd or SOURCE_ROOT
        self.log_path = Path(tempfile.mkstemp(prefix="embed-service-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.url = ""

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def start(self, timeout: float = 60.0) -> ServiceProcess:
        """Start the child and wait until /healthz answers 200; RuntimeError with its output
        if it exits first or does not answer within `timeout` seconds."""
        with socket.socket() as listener, open(self.log_path, "ab") as log:
            listener.bind(("127.0.0.1", 0))
            listener.listen(2048)
            self.port = listener.getsockname()[1]
            self.url = f"http://127.0.0.1:{self.port}"
            command = [sys.executable, "-m", "service.api", "--fd", str(listener.fileno())]
            if self.app is not None:
                command += ["--app", self.app]
            self.process = subprocess.Popen(
                command,
                env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                pass_fds=(listener.fileno(),),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._clean_up()
                raise RuntimeError(f"the service exited with {self.process.returncode}:\n"
                                   f"{self.output()}")
            if self._healthy():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the service did not answer on {self.url} within {timeout} s:\n"
                           f"{self.output()}")

    def _healthy(self) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            connection.request("GET", "/healthz")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (a graceful stop: the shutdown snapshot runs), SIGKILL after `timeout`
        seconds; the exit status (None if never started)."""
        try:
            if self.process is None:
                return None
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            return self.process.returncode
        finally:
            self._clean_up()

    def _clean_up(self) -> None:
        if self.own_data_dir is not None:
            shutil.rmtree(self.own_data_dir, ignore_errors=True)

    def output(self) -> str:
        """What the child has logged so far."""
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
