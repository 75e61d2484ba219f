"""A bare ASGI app for bench/compare.py: it reads the request body and answers with the bytes
of a lookup reply for as many ids as the request's .npy header says (zeros, (n, 64) float32,
built once per n), doing nothing else. Served as the service is (`python bench/_bare_asgi.py
--fd N`: uvicorn configured by service.api.server.build_config's flags, with the service's
connection protocol) and called through the same client, it shows what the server and the
client cost on their own: the floor under the service's lookup latency and rate (rows 2, 3)."""

from __future__ import annotations

import argparse
import io
import math
import re
import socket
from typing import Any

import numpy as np

SHAPE = re.compile(rb"'shape': \(([0-9, ]*)\)")
_replies: dict[int, bytes] = {}


def reply_for(count: int) -> bytes:
    if count not in _replies:
        stream = io.BytesIO()
        np.save(stream, np.zeros((count, 64), dtype=np.float32))
        _replies[count] = stream.getvalue()
    return _replies[count]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    shape = SHAPE.search(chunks[0][:256])
    count = math.prod(int(size) for size in shape[1].split(b",") if size.strip()) if shape else 0
    body = reply_for(count)
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/x-npy"), (b"content-length", str(len(body)).encode()),
        (b"x-table-step", b"0")]})
    await send({"type": "http.response.body", "body": body})


def serve(fd: int) -> None:
    """Serve `app` on a listening socket's descriptor, configured as the service's server."""
    import uvicorn

    from service.api.connections import ConnectionLimits, bounded_protocol
    from service.api.settings import Settings

    settings = Settings()
    limits = ConnectionLimits(settings.max_connections, settings.request_head_timeout_seconds,
                              settings.request_body_timeout_seconds,
                              settings.request_body_min_bytes_per_second)
    config = uvicorn.Config(app, loop="uvloop", http=bounded_protocol(limits, lambda _: None),
                            workers=1, lifespan="on", access_log=False, log_level="warning",
                            timeout_keep_alive=60)
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fd", type=int, required=True, help="a listening socket's descriptor")
    serve(parser.parse_args().fd)
