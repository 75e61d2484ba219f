"""The app's own CPU per request, without a server or a socket: the service's ASGI app driven
in-process against the bare ASGI app (bench/_bare_asgi.py) in the same harness.

    .venv/bin/python bench/asgi_cost.py                  # 32- and 4096-id lookups, pushes
    .venv/bin/python bench/asgi_cost.py --profile 32     # cProfile of the 32-id lookups

The requests are the load rows' (bench/load.py): .npy lookups of 32 and 4096 ids and pushes of
4096 ids with apply=true, on a 100,000 x 64 float32 table, with a bearer token, at log level
warning (--log-level info: the access log on, written to /dev/null). Each request is a fresh
scope, its body one http.request message, awaited on uvloop as uvicorn would; the sides
alternate in blocks, and each figure is the median over blocks of CPU time (process_time) per
request. What the server does around the app (parsing, the socket writes) is not here:
bench/load.py has that.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _bare_asgi  # noqa: E402
from peers import uniform_ids, zipf_ids  # noqa: E402

TOKEN, ROWS, DIM = "bench-token", 100_000, 64
App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def body_of(kind: str, rng: np.random.Generator) -> tuple[str, bytes]:
    stream = io.BytesIO()
    if kind == "push":
        np.save(stream, zipf_ids(rng, ROWS, 4096))
        np.save(stream, rng.standard_normal((4096, DIM), dtype=np.float32) * 0.01)
        return "/v1/tables/bench/gradients", stream.getvalue()
    np.save(stream, uniform_ids(rng, ROWS, int(kind)))
    return "/v1/tables/bench/lookup", stream.getvalue()


def scope_of(path: str, query: bytes, body: bytes) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000),
            "scheme": "http", "method": "POST", "root_path": "", "path": path,
            "raw_path": path.encode(), "query_string": query,
            "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"),
                        (b"content-type", b"application/x-npy"),
                        (b"authorization", f"Bearer {TOKEN}".encode()),
                        (b"content-length", str(len(body)).encode())], "state": {}}


async def serve(app: App, path: str, query: bytes, body: bytes, count: int) -> None:
    statuses = []
    for _ in range(count):
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope_of(path, query, body), receive, send)
    assert set(statuses) == {200}, set(statuses)


def service_app(log_level: str) -> Any:
    os.environ.update({"EMBED_TOKEN": TOKEN, "EMBED_LOG_LEVEL": log_level,
                       "EMBED_DATA_DIR": tempfile.mkdtemp(prefix="asgi-cost-"),
                       "EMBED_SNAPSHOT_ON_SHUTDOWN": "false"})
    from service.api.main import create_app
    from service.api.settings import Settings

    app = create_app(Settings())
    table = app.state.registry.create("bench", ROWS, DIM, optimizer={"kind": "sgd", "lr": 0.01})
    assert table is not None
    return app


def measure(sides: dict[str, App], kind: str, requests: int, blocks: int,
            loop: asyncio.AbstractEventLoop) -> dict[str, float]:
    rng = np.random.default_rng(0)
    path, body = body_of(kind, rng)
    query = b"apply=true" if kind == "push" else b""
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for app in sides.values():
        loop.run_until_complete(serve(app, path, query, body, 50))  # warm up
    names = list(sides)
    for block in range(blocks):
        for name in names[block % len(names):] + names[: block % len(names)]:
            started = time.process_time()
            loop.run_until_complete(serve(sides[name], path, query, body, requests))
            seconds[name].append((time.process_time() - started) / requests)
    return {name: statistics.median(values) for name, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="per block")
    parser.add_argument("--blocks", type=int, default=7)
    parser.add_argument("--profile", choices=["32", "4096", "push"])
    parser.add_argument("--log-level", default="warning", choices=["warning", "info"])
    args = parser.parse_args()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    if args.log_level == "info":
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (the access log's lines go nowhere)
    sides: dict[str, App] = {"bare": _bare_asgi.app, "service": service_app(args.log_level)}
    if args.profile:
        rng = np.random.default_rng(0)
        path, body = body_of(args.profile, rng)
        query = b"apply=true" if args.profile == "push" else b""
        profile = cProfile.Profile()
        profile.runcall(loop.run_until_complete,
                        serve(sides["service"], path, query, body, args.requests))
        pstats.Stats(profile).sort_stats("tottime").print_stats(35)
        return
    for kind, requests in (("32", args.requests), ("4096", args.requests // 4),
                           ("push", args.requests // 8)):
        took = measure(sides, kind, requests, args.blocks, loop)
        label = "push 4096 + apply" if kind == "push" else f"lookup {kind} ids"
        ours, bare = took["service"] * 1e6, took["bare"] * 1e6
        print(f"{label:18s}  service {ours:7.1f} us CPU/request  bare {bare:6.1f} us  "
              f"service - bare {ours - bare:7.1f} us")


if __name__ == "__main__":
    main()
