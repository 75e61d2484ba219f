"""One write per reply (service.api.connections.OneWrite): the service's HTTP protocol sends the
same bytes as uvicorn's own, in fewer writes: a reply's head leaves with its body.

Both protocols are driven in-process through a transport that records every write, with the
same requests (pipelined too): small and large bodies, a streamed body, HEAD, 204, a request
that waits for `100 Continue`, a reply cut short by an error, a connection closed by the app."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from service.api.connections import ConnectionLimits, bounded_protocol

SMALL = b"s" * 8192
LARGE = b"L" * (1 << 20)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    path = scope["path"]
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if path == "/broken":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"10")]})
        raise RuntimeError("the reply is cut short")
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"transfer-encoding", b"chunked")]})
        for part in (b"one", b"two", b"three"):
            await asyncio.sleep(0)
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    content = {"/small": SMALL, "/large": LARGE, "/echo": body, "/empty": b""}[path]
    status = 204 if path == "/empty" else 200
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(content)).encode()),
                            (b"x-step", b"7")]})
    await send({"type": "http.response.body", "body": content})


class Transport(asyncio.Transport):
    """Records what is written to it, one entry per write (writelines: one entry)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5000)}.get(
            name, default)

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def writelines(self, parts: Any) -> None:
        self.writes.append(b"".join(bytes(part) for part in parts))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass


def connected(protocol_class: Callable[..., Any], asgi_app: Any) -> tuple[Any, Transport]:
    """A protocol of `protocol_class` serving `asgi_app` (as uvicorn configures it), connected
    to a Transport that records its writes. Call from a running event loop."""
    config = uvicorn.Config(asgi_app, http=protocol_class, lifespan="off", log_level="critical")
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={},
                              _loop=asyncio.get_running_loop())
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport


def served(protocol_class: Callable[..., Any], requests: list[bytes]) -> list[bytes]:
    """The writes a protocol makes for `requests`, sent one after another on one connection
    (each in its own data_received call, so several may be pending at once: pipelining)."""

    async def run() -> list[bytes]:
        protocol, transport = connected(protocol_class, app)
        for request in requests:
            protocol.data_received(request)
        for _ in range(200):  # until every reply is out (each step lets the tasks run)
            await asyncio.sleep(0)
            if not protocol.tasks and not protocol.pipeline:
                break
        protocol.connection_lost(None)
        return transport.writes

    return asyncio.run(run())


def ours() -> Callable[..., Any]:
    limits = ConnectionLimits(max_connections=100, head_timeout=10, body_timeout=30,
                              body_min_rate=1024)
    return bounded_protocol(limits, lambda reason: None)


def request(path: str, method: str = "POST", body: bytes = b"", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: test", f"content-length: {len(body)}",
             *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.mark.parametrize(("requests", "writes", "uvicorn_writes"), [
    ([request("/small")], 1, 2),
    ([request("/large")], 1, 2),
    ([request("/echo", body=b"abc")], 1, 2),
    ([request("/empty")], 1, 2),
    ([request("/small", "HEAD")], 1, 1),  # no body: the head goes when the reply is complete
    ([request("/stream")], 4, 5),  # head + "one" together, then two, three and the end
    ([request("/small"), request("/large"), request("/small", "HEAD"),
      request("/echo", body=b"x")], 4, 7),
    ([request("/small") + request("/echo", body=b"both")], 2, 4),  # two requests in one read
    ([request("/small", connection="close")], 1, 2),
    ([request("/broken")], 1, 1),  # started, then an error: the head goes out at the close
])
def test_the_same_bytes_in_one_write_per_reply(
    requests: list[bytes], writes: int, uvicorn_writes: int
) -> None:
    uvicorns = served(HttpToolsProtocol, requests)
    service = served(ours(), requests)
    assert b"".join(service) == b"".join(uvicorns)
    assert (len(service), len(uvicorns)) == (writes, uvicorn_writes)


def test_100_continue_is_not_held_back() -> None:
    """A client that waits for `100 Continue` before sending its body must get it at once."""
    head = request("/echo", expect="100-continue").replace(b"content-length: 0",
                                                           b"content-length: 5")

    async def run() -> list[bytes]:
        protocol, transport = connected(ours(), app)
        protocol.data_received(head)
        for _ in range(20):
            await asyncio.sleep(0)
        waiting = list(transport.writes)  # before the body was sent
        protocol.data_received(b"hello")
        for _ in range(20):
            await asyncio.sleep(0)
        protocol.connection_lost(None)
        return [*waiting, b"--", *transport.writes[len(waiting):]]

    writes = asyncio.run(run())
    assert writes[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert writes[1] == b"--"
    assert len(writes) == 3 and writes[2].startswith(b"HTTP/1.1 200 OK") \
        and writes[2].endswith(b"hello")


def test_no_reply_leaves_garbage_for_the_collector() -> None:
    """A reply's transport knows its cycle weakly: requests make no reference cycles (each
    would wait for the garbage collector, whose full passes stall the loop for tens of ms)."""
    requests = [request("/small"), request("/small", "HEAD"), request("/stream")] * 30

    def garbage(protocol_class: Callable[..., Any]) -> int:
        gc.collect()
        gc.disable()
        try:
            served(protocol_class, requests)
            return gc.collect()
        finally:
            gc.enable()

    assert garbage(ours()) <= garbage(HttpToolsProtocol)
