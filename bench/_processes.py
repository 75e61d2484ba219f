"""The processes bench/compare.py starts on loopback and stops: the service (python -m
service.api, as in production, through service.api.process; log level warning, keep-alive 60 s)
and a redis-server (no persistence), each on a free port, each stopped however the benchmark
ends."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.api.process import ServiceProcess, free_port  # noqa: E402

TOKEN = "bench-token"


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """Resident set size of a process (VmRSS), or another field of /proc/<pid>/status in kB
    (RssAnon: its private memory; RssFile: pages of mapped files, shared libraries among them)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for process {pid}")


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within 60 s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def service() -> Iterator[tuple[str, int]]:
    """(url, pid) of the service in a uvicorn process, with a bearer token, no snapshots."""
    env = {"EMBED_TOKEN": TOKEN, "EMBED_LOG_LEVEL": "warning",
           "EMBED_SNAPSHOT_ON_SHUTDOWN": "false", "EMBED_KEEP_ALIVE_SECONDS": "60"}
    with ServiceProcess(env=env) as process:
        yield process.url, process.pid


@contextmanager
def bare_asgi() -> Iterator[str]:
    """The url of bench/_bare_asgi.py's app served the way the service is (python -m service.api
    --app: service.api.server's uvicorn configuration and connection protocol), on a free
    loopback port."""
    env = {"EMBED_LOG_LEVEL": "warning", "EMBED_KEEP_ALIVE_SECONDS": "60"}
    with ServiceProcess(env=env, app="bench._bare_asgi:app") as process:
        yield process.url


def redis_missing() -> str | None:
    """Why the Redis peer cannot run here, or None."""
    if shutil.which("redis-server") is None:
        return "redis-server not found (Debian: apt-get install redis-server; `make bench` does)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "redis-py not installed (pip install 'redis[hiredis]'; the bench extra has it)"
    return None


@contextmanager
def redis_server() -> Iterator[int]:
    """The port of a redis-server on 127.0.0.1: no RDB snapshots, no AOF, nothing on disk."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    log = workdir / "redis.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir), "--protected-mode", "yes"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, process, "redis-server", log)
        yield port
    finally:
        stop(process)
        shutil.rmtree(workdir, ignore_errors=True)
