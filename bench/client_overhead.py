"""How much the Python client costs on top of the wire: lookups per second through
EmbeddingClient vs a raw http.client request of the same bytes, on the same live server.

    .venv/bin/python bench/client_overhead.py            # starts its own uvicorn on 127.0.0.1
    .venv/bin/python bench/client_overhead.py --url http://127.0.0.1:8000   # an existing one

Both sides send the same .npy body of 4096 int64 ids (a table of dim 64, float32) over one
kept-alive connection, one request at a time; the raw side reads the reply bytes and stops
there, the clients also decode them into an array. The async client (one request at a time on
its event loop) and plain httpx.Client (httpx's default transport) are shown for comparison,
and a raw connection with TCP_NODELAY (http.client leaves Nagle's algorithm on; every client
here turns it off), the stricter peer. Requests alternate between the sides one by one, so all
see the same machine load; each side's rate is its request count over its summed time. The
client's CPU per lookup (this process's CPU time: the server's is not counted) is shown too:
it is steadier than rates on a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.api.process import ServiceProcess  # noqa: E402
from service.client import AsyncEmbeddingClient, EmbeddingClient  # noqa: E402
from service.client import _codecs as codecs  # noqa: E402
from service.client._codecs import NPY, encode_npy  # noqa: E402


@contextmanager
def uvicorn_server() -> Iterator[str]:
    """The service as `make serve` runs it (python -m service.api), on a free loopback port."""
    env = {"EMBED_LOG_LEVEL": "warning", "EMBED_KEEP_ALIVE_SECONDS": "60"}
    with ServiceProcess(env=env) as process:
        yield process.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an already running service (default: start one)")
    parser.add_argument("--ids", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--requests", type=int, default=1000, help="per side")
    args = parser.parse_args()

    with (uvicorn_server() if args.url is None else _given(args.url)) as url:
        table = f"bench-{uuid.uuid4().hex[:8]}"
        ids = np.random.default_rng(0).integers(0, 100_000, args.ids)  # (ids,) int64
        body = encode_npy(ids)
        parts = urlsplit(url)
        raw = http.client.HTTPConnection(parts.hostname, parts.port)
        nodelay = http.client.HTTPConnection(parts.hostname, parts.port)
        nodelay.connect()
        nodelay.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        path = f"/v1/tables/{table}/lookup"
        headers = {"Content-Type": NPY, "Accept": NPY}

        def raw_lookup(connection: http.client.HTTPConnection = raw) -> bytes:
            connection.request("POST", path, body=body, headers=headers)
            reply = connection.getresponse()
            data = reply.read()
            assert reply.status == 200, data
            return data

        # the async client on asyncio's default loop and on uvloop (a dependency already, via
        # uvicorn[standard]): each loop with a client of its own
        loop = asyncio.new_event_loop()
        async_client = AsyncEmbeddingClient(url)
        fast_loop = uvloop.new_event_loop()
        fast_async_client = AsyncEmbeddingClient(url)

        async def async_lookup(client: AsyncEmbeddingClient) -> tuple[float, float]:
            start, cpu = time.perf_counter(), time.process_time()
            await client.lookup(table, ids)
            return time.perf_counter() - start, time.process_time() - cpu

        plain = httpx.Client(base_url=url)
        with EmbeddingClient(url) as client:
            client.create_table(table, 100_000, args.dim)
            expected = client.lookup(table, ids)
            raw_rows = np.frombuffer(raw_lookup()[-expected.nbytes:], dtype=np.float32)
            assert np.array_equal(raw_rows.reshape(expected.shape), expected)
            assert np.array_equal(loop.run_until_complete(async_client.lookup(table, ids)),
                                  expected)
            def timed(send: Callable[[], object]) -> Callable[[], tuple[float, float]]:
                def run() -> tuple[float, float]:
                    start, cpu = time.perf_counter(), time.process_time()
                    send()
                    return time.perf_counter() - start, time.process_time() - cpu
                return run

            sides = {"raw": timed(raw_lookup), "nodelay": timed(lambda: raw_lookup(nodelay)),
                     "sync": timed(lambda: client.lookup(table, ids)),
                     "async": lambda: loop.run_until_complete(async_lookup(async_client)),
                     "uvloop": lambda: fast_loop.run_until_complete(
                         async_lookup(fast_async_client)),
                     "httpx": timed(lambda: codecs.decode_npy(
                         plain.post(path, content=body, headers=headers).content))}
            order = list(sides)
            seconds: dict[str, list[float]] = {side: [] for side in sides}
            cpu_seconds: dict[str, list[float]] = {side: [] for side in sides}
            for number in range(args.requests + 50):  # the first 50 warm up, uncounted
                turn = number % len(order)
                for side in order[turn:] + order[:turn]:  # no side always first
                    elapsed, cpu = sides[side]()
                    if number >= 50:
                        seconds[side].append(elapsed)
                        cpu_seconds[side].append(cpu)
            client.delete_table(table)
        plain.close()
        loop.run_until_complete(async_client.close())
        loop.close()
        fast_loop.run_until_complete(fast_async_client.close())
        fast_loop.close()
        raw.close()
        nodelay.close()

    rate = {side: len(times) / sum(times) for side, times in seconds.items()}
    median = {side: float(np.median(times)) * 1e3 for side, times in seconds.items()}
    cpu_us = {side: sum(times) / len(times) * 1e6 for side, times in cpu_seconds.items()}
    print(f"lookup of {args.ids} ids, dim {args.dim}, float32 "
          f"({args.ids * args.dim * 4 / 2**20:.2f} MiB reply), {args.requests} requests a side, "
          "interleaved")
    for side, label in (("raw", "raw http.client     "), ("nodelay", "raw, TCP_NODELAY    "),
                        ("sync", "EmbeddingClient     "), ("async", "AsyncEmbeddingClient"),
                        ("uvloop", "Async... on uvloop  "), ("httpx", "plain httpx.Client  ")):
        print(f"{label}: {rate[side]:7.0f} req/s   median {median[side]:.2f} ms   "
              f"client CPU {cpu_us[side]:4.0f} us")
    for side, label in (("sync", "EmbeddingClient / raw     "),
                        ("async", "AsyncEmbeddingClient / raw"),
                        ("uvloop", "  ... on uvloop / raw     "),
                        ("httpx", "plain httpx.Client / raw  ")):
        print(f"{label}: {rate[side] / rate['raw']:7.1%}   "
              f"(/ raw with TCP_NODELAY: {rate[side] / rate['nodelay']:6.1%})")
    print("(the async client on asyncio's default loop; plain httpx.Client is httpx's own "
          "transport: what the client would get untuned)")


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


if __name__ == "__main__":
    main()
