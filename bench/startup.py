"""Does numba's compile time reach users? Start-up to ready, and the first requests against the
steady state, for each kernel backend.

    .venv/bin/python bench/startup.py              # 3 rounds, about a minute
    .venv/bin/python bench/startup.py --rounds 5

Each round starts the service three ways, as `make serve` does (`python -m service.api`):
numba with an empty cache (NUMBA_CACHE_DIR a fresh directory: everything compiles at start),
numba with the cache that start left behind, and EMBED_KERNELS=numpy. It measures the
seconds from spawning the process to the first 200 from /healthz (ready), then, on a
1,000,000 x 64 float32 SGD table, the first push of 4096 Zipf ids with apply=true and the first
4096-id lookup, each on a fresh connection, against the median of the 30 after them (first
minus steady, in ms; raw HTTP requests built beforehand, so the figure is the server's).
Target: ready in under 5 s without a cache, and no first request more than 10 ms slower than
the steady state. Last, it creates a dynamic table and notes when that returned (seconds since
spawning): a dynamic table waits for its kernels, which compile after ready when numba's cache
does not have them (service.core.dynamic.warmup).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _processes import free_port  # noqa: E402
from peers import uniform_ids, zipf_ids  # noqa: E402

ROWS, DIM = 1_000_000, 64


def start(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, float, float]:
    """A service process, its URL, the seconds until /healthz answered 200, and when it was
    spawned (perf_counter)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "service.api", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    while time.perf_counter() - started < 60:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url, time.perf_counter() - started, started
        except httpx.TransportError:
            time.sleep(0.01)
    process.kill()
    raise RuntimeError("the service did not answer /healthz within 60 s")


def first_and_steady(port: int, request: bytes) -> tuple[float, float]:
    """Seconds of the first exchange of `request` (raw HTTP/1.1 bytes, built beforehand, so no
    client-side first-call cost is counted) on a fresh connection, and the median of the 30
    after it."""
    times = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(31):
            begun = time.perf_counter()
            sock.sendall(request)
            reply = b""
            while b"\r\n\r\n" not in reply:
                reply += sock.recv(1 << 20)
            head, _, body = reply.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            while len(body) < length:
                body += sock.recv(1 << 20)
            times.append(time.perf_counter() - begun)
            assert head.startswith(b"HTTP/1.1 200"), head
    return times[0], statistics.median(times[1:])


def post(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/x-npy\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def npy(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array)
    return stream.getvalue()


def one_start(env: dict[str, str], rng: np.random.Generator) -> dict[str, float]:
    ids, grads = zipf_ids(rng, ROWS, 4096), rng.standard_normal((4096, DIM), np.float32)
    push = post("/v1/tables/words/gradients?apply=true", npy(ids) + npy(grads))
    lookup = post("/v1/tables/words/lookup", npy(uniform_ids(rng, ROWS, 4096)))
    process, url, ready, spawned = start(env)
    try:
        httpx.post(f"{url}/v1/tables", json={"name": "words", "num_embeddings": ROWS,
                                            "embedding_dim": DIM}, timeout=60).raise_for_status()
        port = int(url.rsplit(":", 1)[1])
        first_push = first_and_steady(port, push)
        first_lookup = first_and_steady(port, lookup)
        # a dynamic table waits for its kernels (compiled after ready when not cached)
        httpx.post(f"{url}/v1/tables", json={"name": "users", "embedding_dim": DIM,
                                            "dynamic": {}}, timeout=120).raise_for_status()
        dynamic = time.perf_counter() - spawned
    finally:
        process.terminate()
        process.wait(30)
    return {"ready s": ready, "push first-steady ms": (first_push[0] - first_push[1]) * 1e3,
            "lookup first-steady ms": (first_lookup[0] - first_lookup[1]) * 1e3,
            "dynamic table made s": dynamic}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results: dict[str, list[dict[str, float]]] = {}
    base = {key: value for key, value in os.environ.items() if not key.startswith("EMBED_")}
    base |= {"EMBED_SNAPSHOT_ON_SHUTDOWN": "false", "EMBED_LOG_LEVEL": "warning"}
    for _ in range(args.rounds):
        cache = tempfile.mkdtemp(prefix="numba-cache-")
        data = tempfile.mkdtemp(prefix="startup-data-")
        try:
            numba = {**base, "EMBED_DATA_DIR": data, "NUMBA_CACHE_DIR": cache}
            for name, env in (("numba, no cache", numba), ("numba, cached", numba),
                              ("numpy", {**numba, "EMBED_KERNELS": "numpy"})):
                results.setdefault(name, []).append(one_start(env, rng))
        finally:
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(data, ignore_errors=True)
    columns = list(next(iter(results.values()))[0])
    print(f"{'start':<16}" + "".join(f"{column:>24}" for column in columns)
          + f"   (median of {args.rounds}; load average {os.getloadavg()[0]:.1f})")
    for name, runs in results.items():
        print(f"{name:<16}" + "".join(
            f"{statistics.median(run[column] for run in runs):>24.2f}" for column in columns))


if __name__ == "__main__":
    main()
