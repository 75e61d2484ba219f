"""How much the Python client costs on top of the wire: lookups per second through
EmbeddingClient vs a raw http.client request of the same bytes, on the same live server.

    .venv/bin/python bench/client_overhead.py            # starts its own uvicorn on 127.0.0.1
    .venv/bin/python bench/client_overhead.py --url http://127.0.0.1:8000   # an existing one

Both sides send the same .npy body of 4096 int64 ids (a table of dim 64, float32) over one
kept-alive connection, one request at a time; the raw side reads the reply bytes and stops
there, the client also decodes them into an array. Rounds alternate so both see the same
machine load; the best round of each is compared (the least disturbed by other processes).
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.client import EmbeddingClient  # noqa: E402
from service.client._codecs import NPY, encode_npy  # noqa: E402


@contextmanager
def uvicorn_server() -> Iterator[str]:
    """The service as `make serve` runs it (uvloop, httptools), on a free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "service.api.main:app", "--host", "127.0.0.1",
         "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--workers", "1",
         "--log-level", "warning", "--no-access-log", "--timeout-keep-alive", "60"],
        cwd=ROOT, env={**os.environ, "EMBED_LOG_LEVEL": "warning"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with EmbeddingClient(url, retries=0) as client:
                    client.health()
                break
            except Exception:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("uvicorn did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def requests_per_second(send: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        send()
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an already running service (default: start one)")
    parser.add_argument("--ids", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--requests", type=int, default=300, help="per round and side")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with (uvicorn_server() if args.url is None else _given(args.url)) as url:
        table = f"bench-{uuid.uuid4().hex[:8]}"
        ids = np.random.default_rng(0).integers(0, 100_000, args.ids)  # (ids,) int64
        body = encode_npy(ids)
        parts = urlsplit(url)
        raw = http.client.HTTPConnection(parts.hostname, parts.port)
        path = f"/v1/tables/{table}/lookup"
        headers = {"Content-Type": NPY, "Accept": NPY}

        def raw_lookup() -> bytes:
            raw.request("POST", path, body=body, headers=headers)
            reply = raw.getresponse()
            data = reply.read()
            assert reply.status == 200, data
            return data

        with EmbeddingClient(url) as client:
            client.create_table(table, 100_000, args.dim)
            expected = client.lookup(table, ids)
            assert np.array_equal(np.frombuffer(raw_lookup()[-expected.nbytes:],
                                                dtype=np.float32).reshape(expected.shape), expected)
            for _ in range(50):  # warm both paths
                raw_lookup()
                client.lookup(table, ids)
            raw_rates, client_rates = [], []
            for _ in range(args.rounds):
                raw_rates.append(requests_per_second(raw_lookup, args.requests))
                client_rates.append(requests_per_second(
                    lambda: client.lookup(table, ids), args.requests))
            client.delete_table(table)
        raw.close()

    raw_best, client_best = max(raw_rates), max(client_rates)
    print(f"lookup of {args.ids} ids, dim {args.dim}, float32 "
          f"({args.ids * args.dim * 4 / 2**20:.2f} MiB reply), {args.rounds} rounds of "
          f"{args.requests} requests")
    print(f"raw http.client     : {raw_best:8.0f} req/s  (rounds: "
          f"{', '.join(f'{r:.0f}' for r in raw_rates)})")
    print(f"EmbeddingClient     : {client_best:8.0f} req/s  (rounds: "
          f"{', '.join(f'{r:.0f}' for r in client_rates)})")
    print(f"client / raw        : {client_best / raw_best:8.1%}")


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


if __name__ == "__main__":
    main()
