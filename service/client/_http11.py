"""HTTP/1.1 for both clients' transports, on h11: h11 writes every request and parses every
reply (framing, chunked bodies, keep-alive, Connection: close, HTTP/1.0); this module only says
which bytes to send, takes the bytes received, and tells when a connection may be used again.
The sync transport (_transport.py) moves the bytes over a socket, the async one
(_async_transport.py) over an anyio stream; nothing here does I/O.

Why h11 rather than a whole client library: measured with the client over each (the README's
client section has the figures), httpcore's pools (httpx's own transport, h11 inside) and
urllib3's cost more per lookup than h11 under these small pools, httpcore's async pool about
twice as much, and urllib3 has no async side; with h11 both clients share one parser. h11 copies
what it is given, so replies are fed to it 64 KiB at a time: the copies stay in the CPU cache
(bigger pieces were slower). bench/client_overhead.py measures the client against a raw
http.client connection.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Sequence
from typing import NamedTuple

import h11
import httpx

Origin = tuple[str, str, int]  # (scheme, host, port): the connections one pool keeps together
Headers = Sequence[tuple[bytes, bytes]]
PIECE_BYTES = 64 * 2**10  # fed to h11 at a time: its copies of a piece stay in the CPU cache
STREAM_READ_BYTES = 256 * 2**10  # read at a time: an event loop's stream reads this much at
# most (asyncio's and uvloop's), so its chunks are never split (a split copies the rest)
SEND_TOGETHER_BYTES = 64 * 2**10  # a body up to this is sent with the head, in one write


class Prepared(NamedTuple):
    """A request as the transports take it: where to, and what h11 is to write. The client
    prepares its own (service.client._wire.RequestFactory) without building an httpx.Request;
    any httpx.Request becomes one with `prepared`."""

    origin: Origin
    method: bytes
    target: bytes
    headers: Headers  # framing the body: Content-Length
    body: bytes


def origin_of(url: httpx.URL) -> Origin:
    return (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))


def prepared(request: httpx.Request) -> Prepared:
    return Prepared(origin_of(request.url), request.method.encode("ascii"), request.url.raw_path,
                    request.headers.raw, request.read())


def request_bytes(connection: h11.Connection, request: Prepared) -> list[bytes]:
    """What to send for a request, as h11 writes it: one piece (a head and a small body
    together: one write, one wake-up of the server), or the head and then the body (not
    copied)."""
    head = connection.send(h11.Request(method=request.method, target=request.target,
                                       headers=list(request.headers)))
    body = request.body
    data = connection.send(h11.Data(data=body)) if body else b""
    end = connection.send(h11.EndOfMessage())
    assert head is not None and data is not None and end is not None  # (None: only on close)
    if len(data) <= SEND_TOGETHER_BYTES:
        return [head + data + end]
    return [head, data, end] if end else [head, data]


class Reply:
    """A reply as h11 parses it from the bytes received on its connection: `receive` them until
    it says the whole reply is in, then `response()`."""

    __slots__ = ("connection", "status", "reason", "headers", "chunks")

    def __init__(self, connection: h11.Connection) -> None:
        self.connection = connection
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes | bytearray] = []

    def receive(self, data: bytes | memoryview) -> bool:
        """Take in bytes received (b"" when the server closed its end), PIECE_BYTES at a time;
        True once the reply is complete. Bytes past its end stay in h11's buffer (and keep the
        connection from being used again: ready_for_another)."""
        connection = self.connection
        if not data:
            if connection.their_state is h11.SEND_RESPONSE:
                raise httpx.RemoteProtocolError("the server closed the connection without "
                                                "replying")
            connection.receive_data(b"")
            return self.done()
        view = memoryview(data)
        for start in range(0, len(data), PIECE_BYTES):
            connection.receive_data(view[start : start + PIECE_BYTES])  # type: ignore[arg-type]
            if self.done():
                if len(data) > start + PIECE_BYTES:  # (b"" would say the server closed)
                    connection.receive_data(view[start + PIECE_BYTES :])  # type: ignore[arg-type]
                return True
        return False

    def done(self) -> bool:
        """Take in every event h11 has parsed so far; True once the reply is complete."""
        while True:
            event = self.connection.next_event()
            kind = type(event)
            if kind is h11.Data:
                self.chunks.append(event.data)  # type: ignore[union-attr]
            elif event is h11.NEED_DATA:
                return False
            elif kind is h11.Response:
                self.status = event.status_code  # type: ignore[union-attr]
                self.reason = event.reason  # type: ignore[union-attr]
                self.headers = event.headers.raw_items()  # type: ignore[union-attr]
            elif kind is h11.EndOfMessage:
                return True
            elif kind is h11.ConnectionClosed:
                raise httpx.RemoteProtocolError("the server closed the connection mid-reply")
            # an InformationalResponse (1xx) precedes the reply: read on

    def response(self) -> httpx.Response:
        content = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        return httpx.Response(
            self.status, headers=self.headers, content=bytes(content),
            extensions={"reason_phrase": self.reason, "http_version": b"HTTP/1.1"},
        )


def ready_for_another(connection: h11.Connection) -> bool:
    """Whether the connection may carry the next request (h11's verdict: not after
    Connection: close, an HTTP/1.0 reply without keep-alive, or a body read to the end of the
    connection; nor with bytes received past the reply); if so, it is reset for it."""
    if (connection.our_state is h11.DONE and connection.their_state is h11.DONE
            and not connection.trailing_data[0]):
        connection.start_next_cycle()
        return True
    return False


def readable_now(sock: socket.socket) -> bool:
    """Whether there is something to read on a socket, without waiting. On an idle kept-alive
    connection that means the server closed it (or sent junk): do not reuse it. poll() where
    the platform has it (any descriptor number; select() refuses those of 1024 and more), else
    select() (Windows, where it takes any socket)."""
    if sock.fileno() < 0:
        return True  # closed under us
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def as_httpx_error(
    error: BaseException, phase: str, request: httpx.Request | None
) -> BaseException:
    """httpx's exception for a failure while writing the request or reading the reply."""
    if isinstance(error, httpx.TransportError):
        if error._request is None and request is not None:
            error.request = request
        return error
    if isinstance(error, TimeoutError):
        cls: type[httpx.TransportError] = (
            httpx.WriteTimeout if phase == "write" else httpx.ReadTimeout)
        return cls(f"{phase} timed out", request=request)
    if isinstance(error, h11.RemoteProtocolError):
        return httpx.RemoteProtocolError(f"malformed reply: {error}", request=request)
    if isinstance(error, h11.LocalProtocolError):
        return httpx.LocalProtocolError(f"malformed request: {error}", request=request)
    if isinstance(error, OSError):
        cls = httpx.WriteError if phase == "write" else httpx.ReadError
        doing = "writing the request" if phase == "write" else "reading the reply"
        return cls(f"connection lost while {doing}: {type(error).__name__} {error}",
                   request=request)
    return error  # KeyboardInterrupt, cancellation and the like pass through unchanged
