"""HTTP/1.1 for both clients' transports: h11 writes every request, httptools (llhttp) parses
every reply (service.client._replies), and this module holds what the two transports share:
the request as they take it, the bytes to send for it, the response they hand back, the
idle-connection check and the mapping of errors to httpx's. Nothing here does I/O; the sync
transport (_transport.py) moves the bytes over a socket, the async one (_async_transport.py)
over an anyio stream.

Why these two libraries (the README's client section has the measurements): h11 parses in
Python and copies each received byte several times, which cost more than the rest of a call on
large replies and small ones alike; httptools parses in C, hands a body over in the pieces it
came in, and lets the bytes be received where they are to stay. It reads replies only, so h11,
which checks what it writes (header names and values, Content-Length against the body), writes
the requests; a request head is the same for every call of a kind (a lookup of a table with the
same number of ids), so each distinct head is written once and kept.
"""

from __future__ import annotations

import select
import socket
from typing import NamedTuple

import h11
import httptools
import httpx

Origin = tuple[str, str, int]  # (scheme, host, port): the connections one pool keeps together
Headers = tuple[tuple[bytes, bytes], ...]
SEND_TOGETHER_BYTES = 64 * 2**10  # a body up to this is sent with the head, in one write
RECEIVE_BYTES = 64 * 2**10  # received at a time as bytes (a head, a short body)
HEADS_KEPT = 256  # distinct request heads remembered


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
                    tuple(request.headers.raw), request.read())


_heads: dict[tuple[bytes, bytes, Headers], tuple[bytes, int]] = {}


def request_bytes(request: Prepared) -> list[bytes]:
    """What to send for a request, as h11 writes it: one piece (a head and a body up to
    SEND_TOGETHER_BYTES together: one write, one wake-up of the server), or the head and then
    the body (not copied). A head written before for the same method, target, headers and body
    length is sent again as it was."""
    body = request.body
    key = (request.method, request.target, request.headers)
    known = _heads.get(key)
    if known is not None and known[1] == len(body):
        head = known[0]
    else:
        writer = h11.Connection(h11.CLIENT)
        head = writer.send(h11.Request(method=request.method, target=request.target,
                                       headers=list(request.headers)))
        data = writer.send_with_data_passthrough(h11.Data(data=body)) if body else []
        end = writer.send(h11.EndOfMessage())
        assert head is not None and data is not None and end is not None  # (None: on close)
        if not (end == b"" and (data == [] if not body else len(data) == 1 and data[0] is body)):
            return [head, *data, end]  # framed otherwise (chunked): as h11 wrote it
        if len(_heads) >= HEADS_KEPT:
            _heads.clear()
        _heads[key] = (head, len(body))
    if len(body) <= SEND_TOGETHER_BYTES:
        return [head + body]
    return [head, body]


class Response:
    """A reply as the client's own transports return it: what the client reads of an
    httpx.Response (status_code, reason_phrase, headers, content, is_success), without building
    one, and with a long body as a read-only memoryview of the buffer it was received into.
    `as_httpx()` makes the httpx.Response that httpx's transport interface returns."""

    __slots__ = ("status_code", "reason_phrase", "headers", "content")

    def __init__(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]],
                 content: bytes | memoryview) -> None:
        self.status_code = status
        self.reason_phrase = reason.decode("ascii", errors="ignore")
        self.headers = httpx.Headers(headers)
        self.content = content

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def as_httpx(self) -> httpx.Response:
        return httpx.Response(
            self.status_code, headers=self.headers, content=bytes(self.content),
            extensions={"reason_phrase": self.reason_phrase.encode("ascii"),
                        "http_version": b"HTTP/1.1"},
        )


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
    if isinstance(error, h11.RemoteProtocolError | httptools.HttpParserError):
        return httpx.RemoteProtocolError(f"malformed reply: {error}", request=request)
    if isinstance(error, h11.LocalProtocolError):
        return httpx.LocalProtocolError(f"malformed request: {error}", request=request)
    if isinstance(error, OSError):
        cls = httpx.WriteError if phase == "write" else httpx.ReadError
        doing = "writing the request" if phase == "write" else "reading the reply"
        return cls(f"connection lost while {doing}: {type(error).__name__} {error}",
                   request=request)
    return error  # KeyboardInterrupt, cancellation and the like pass through unchanged
