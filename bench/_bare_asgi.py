"""A bare ASGI app: the floor under the service in bench/load.py (and wherever a benchmark wants
to know what the server and the client cost on their own).

Served by the service's own server configuration (`python -m service.api --app
bench._bare_asgi:app`: uvicorn, uvloop, httptools, the same protocol class and flags), it
reads each request's body to its end and answers with as many bytes as the service would,
doing nothing else: a lookup (`.../lookup`) gets the .npy of (n, 64) float32 zeros for the n
ids the request's .npy header declares (built once per n), a gradient push (`.../gradients`)
a JSON reply of the service's shape, /healthz 200 (what ServiceProcess waits for).
"""

from __future__ import annotations

import io
import math
import re
from typing import Any

import numpy as np

DIM = 64
SHAPE = re.compile(rb"'shape': \(([0-9, ]*)\)")
PUSH_REPLY = b'{"rows":4096,"pending_rows":0,"step":1000,"rows_updated":3000}'
_replies: dict[int, bytes] = {}


def reply_for(count: int) -> bytes:
    """The .npy bytes of a lookup reply for `count` ids."""
    if count not in _replies:
        stream = io.BytesIO()
        np.save(stream, np.zeros((count, DIM), dtype=np.float32))  # (count, DIM)
        _replies[count] = stream.getvalue()
    return _replies[count]


async def lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    first, more = b"", True
    while more:  # the whole body is read, as the service reads it; only its head is kept
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        first = first or message.get("body", b"")
        more = message.get("more_body", False)
    headers = [(b"content-type", b"application/json")]
    if scope["path"].endswith("/lookup"):
        shape = SHAPE.search(first[:256])
        count = math.prod(int(size) for size in shape[1].split(b",") if size.strip()) \
            if shape else 0
        body = reply_for(count)
        headers = [(b"content-type", b"application/x-npy"), (b"x-table-step", b"0")]
    elif scope["path"].endswith("/gradients"):
        body = PUSH_REPLY
    else:
        body = b'{"status":"ok"}'
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
