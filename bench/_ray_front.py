"""A front that reaches the shards by Ray actor calls: the data path bench/cluster_paths.py
measures against the one the service takes (HTTP to the shard servers).

Served as the service is (python -m service.api --app bench._ray_front:app), on a Ray cluster
(EMBED_RAY_ADDRESS, EMBED_RAY_NAMESPACE) where a cluster-mode service holds the tables: a .npy
lookup is split by the key hash and each part sent to its shard server as an actor call
(ShardServer.lookup: the rows come back through Ray's object transfer), the parts awaited
together and put back in order. Lookups only; nothing else.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import numpy as np
import ray

from service import npy
from service.sharding import gather, split

ray.init(address=os.environ["EMBED_RAY_ADDRESS"], namespace=os.environ["EMBED_RAY_NAMESPACE"],
         logging_level="warning", configure_logging=False)
_servers: dict[str, list[Any]] = {}


def servers_of(table: str) -> list[Any]:
    if table not in _servers:
        catalog = ray.get_actor("embed-catalog")
        described = ray.get(catalog.describe.remote(table))
        _servers[table] = [ray.get_actor(name) for name in described["servers"]]
    return _servers[table]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["path"] == "/healthz":
        await reply(send, 200, b'{"status":"ok"}', b"application/json")
        return
    table = scope["path"].split("/")[3]
    servers = servers_of(table)
    ids = npy.read(body, field="ids")[0]
    where = split(ids, len(servers))
    wanted = [k for k, positions in enumerate(where.positions) if len(positions)]
    found = await asyncio.gather(*(servers[k].lookup.remote(ids.reshape(-1)[where.positions[k]])
                                   for k in wanted))
    parts = [np.empty((0, 64), np.float32)] * len(servers)
    for k, (rows, _) in zip(wanted, found, strict=True):
        parts[k] = rows
    rows = gather(where, parts, (parts[wanted[0]].shape[1],), parts[wanted[0]].dtype)
    step = min(step for _, step in found)
    await reply(send, 200, npy.encode(rows.reshape(*ids.shape, -1)), b"application/x-npy",
                [(b"x-table-step", str(step).encode())])


async def reply(send: Any, status: int, body: bytes, media: bytes,
                extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", media),
                            (b"content-length", str(len(body)).encode()), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
