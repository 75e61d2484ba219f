"""Deadlines for a request's head and body, and a bound on connections, in uvicorn's HTTP
protocol (httptools).

uvicorn times out nothing of a request: a client that sends its headers (or its body) a byte a
second, or connects and says nothing, holds a connection and its file descriptor for as long as
it likes, and 1,000 of them exhaust the process's descriptors for everyone. Slow headers never
reach the ASGI app, so the app cannot time them out: this subclass of uvicorn's protocol does,
where the bytes arrive.

- Head: a request's line and headers must be complete `head_timeout` seconds after its first
  byte (for a new connection, after it opens). Else: 408, connection closed.
- Body: once the head is in, the body's deadline is `body_timeout` seconds away and moves on
  by 1 / `body_min_rate` seconds for every byte that arrives: a body arriving at least at
  `body_min_rate` bytes a second never times out, one slower is cut off `body_timeout` seconds
  behind. While the server itself has stopped reading (the app is not consuming the body yet)
  the client is not held to it. Else: 408 if no reply was started, connection closed; the app
  sees the client gone (ClientDisconnect), logged as 408 (service.api.middleware.observe).
- Connections: with `max_connections` open, one more is answered 503 at once and closed (its
  request, if sent, is read and dropped for a second so the 503 is not lost to a reset).

A request only stores its deadline (a float); one sweep per server, every quarter of the
shorter timeout (at most a second), closes the connections past theirs. No timer is made or
cancelled per request.

    config = uvicorn.Config(app, http=bounded_protocol(limits, metrics.count_closed_connection))
"""

from __future__ import annotations

import asyncio
import collections
import http
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.api.errors import RequestTimeout, TooManyConnections
from service.api.middleware.observe import TIMED_OUT
from service.core.errors import EmbeddingServiceError

JOIN_BYTES = 64 * 2**10  # a body up to this size is joined to its head (one copy): one write
REFUSED_LINGER_SECONDS = 1.0  # how long a refused connection is read (and dropped) before closing
MAX_SWEEP_SECONDS = 1.0


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    head_timeout: float  # seconds
    body_timeout: float  # seconds
    body_min_rate: float  # bytes a second


def canned_reply(error: EmbeddingServiceError) -> bytes:
    """The error's whole HTTP/1.1 reply (its status, code and JSON {"detail"}), closing the
    connection: written straight to the socket, where no ASGI app is involved."""
    body = orjson.dumps({"detail": error.detail})
    status = f"{error.status_code} {http.HTTPStatus(error.status_code).phrase}"
    head = (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nx-error-code: {error.code}\r\n"
            "connection: close\r\n\r\n")
    return head.encode("latin-1") + body


class OneWrite:
    """The transport one reply is written through: its head is held back and written with the
    first part of its body, in one write. uvicorn writes a reply's head and body separately:
    two system calls, and on loopback often two wake-ups of the client, where one does.
    Writes before the reply starts (100 Continue) pass at once; whatever is held when the reply
    ends (a HEAD reply's head) or the connection closes is written then."""

    __slots__ = ("transport", "cycle", "head", "started")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        # the request's cycle, once uvicorn has made it; weakly: the cycle holds this transport,
        # and a cycle of references per request would be left to the garbage collector
        self.cycle: Callable[[], Any] = lambda: None
        self.head: bytes | None = None
        self.started = False  # the reply's head has come

    def write(self, data: bytes | bytearray | memoryview) -> None:
        head = self.head
        if head is not None:
            self.head = None
            if len(data) <= JOIN_BYTES:
                self.transport.write(head + data)
            else:  # no copy of a large body: one writev of both
                self.transport.writelines((head, data))
        elif not self.started and (cycle := self.cycle()) is not None and cycle.response_started:
            self.started = True  # uvicorn writes the head right after marking the reply started
            self.head = bytes(data)
        else:
            self.transport.write(data)

    def flush(self) -> None:
        head = self.head
        if head is not None:
            self.head = None
            self.transport.write(head)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head and body deadlines and a connection bound. Made
    for one server by `bounded_protocol`, which sets the two class attributes below."""

    limits: ConnectionLimits
    on_close: Callable[[str], None]  # told the reason of each connection this class closes
    sweeping: asyncio.AbstractEventLoop | None = None  # the loop the sweep runs on, once started

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: str | None = None  # "head" or "body" while a deadline runs
        self._deadline = 0.0
        self._refused = False
        self._linger: asyncio.TimerHandle | None = None
        self._replies: collections.deque[OneWrite] = collections.deque()  # in request order

    # -- connections -----------------------------------------------------------------------
    # asyncio.Protocol declares a BaseTransport; uvicorn's own protocol, like this one, is
    # only ever given a stream Transport (it calls get_extra_info, pause_reading, write)
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self._refuse(transport)
            return
        super().connection_made(transport)
        self._start("head", self.limits.head_timeout)
        if type(self).sweeping is not self.loop:
            type(self).sweeping = self.loop
            self.loop.call_later(self._sweep_seconds(), self._sweep)

    def _refuse(self, transport: asyncio.Transport) -> None:
        self._refused = True
        self.transport = transport
        self.on_close("too_many_connections")
        transport.write(canned_reply(TooManyConnections(
            f"the server holds max_connections={self.limits.max_connections} connections; try "
            "again shortly")))
        if transport.can_write_eof():
            transport.write_eof()
        self._linger = self.loop.call_later(REFUSED_LINGER_SECONDS, transport.close)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = None
        if self._linger is not None:
            self._linger.cancel()
        super().connection_lost(exc)

    # -- the parser's events ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase is None:  # a keep-alive connection's next request: its first byte
            self._start("head", self.limits.head_timeout)

    def on_headers_complete(self) -> None:
        transport, previous = self.transport, self.cycle
        one_write = self.transport = OneWrite(transport)  # type: ignore[assignment]
        try:  # the request's cycle is made here, and writes through one_write
            super().on_headers_complete()
        finally:
            self.transport = transport
        if self.cycle is not previous:
            one_write.cycle = weakref.ref(self.cycle)
            self._replies.append(one_write)
        self._start("body", self.limits.body_timeout)

    def on_response_complete(self) -> None:
        while self._replies and getattr(self._replies[0].cycle(), "response_complete", True):
            self._replies.popleft().flush()  # a HEAD reply has no body to take its head along
        super().on_response_complete()

    def on_body(self, body: bytes) -> None:
        """uvicorn's on_body, without its copies when the app reads each piece as it comes:
        uvicorn appends every piece to a bytearray (a copy) that its receive() turns into bytes
        (another copy), twice over every byte of a 1 MiB push. A piece arriving while nothing
        is waiting is kept as it is (bytes), which receive() hands over as it is (bytes() of a
        bytes object is that object); only a second piece before the app reads joins them in a
        bytearray, as uvicorn does. Reading pauses past uvicorn's high-water mark as before."""
        cycle = self.cycle
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        pending: bytes | bytearray = cycle.body  # uvicorn declares a bytearray
        if not pending:
            pending = body  # receive() takes bytes(cycle.body): this very object
        else:
            if not isinstance(pending, bytearray):
                pending = bytearray(pending)
            pending += body
        cycle.body = pending  # type: ignore[assignment]
        if len(pending) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()
        self._deadline += len(body) / self.limits.body_min_rate

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._phase = None

    # -- deadlines ---------------------------------------------------------------------------
    def _start(self, phase: str, seconds: float) -> None:
        self._phase = phase
        self._deadline = self.loop.time() + seconds

    @classmethod
    def _sweep_seconds(cls) -> float:
        return min(MAX_SWEEP_SECONDS, cls.limits.head_timeout / 4, cls.limits.body_timeout / 4)

    def _sweep(self) -> None:
        """Close every connection of this server past its deadline; then again in a while."""
        now = self.loop.time()
        for connection in list(self.connections):
            if isinstance(connection, BoundedHttpProtocol) and connection._phase is not None:
                connection._check(now)
        self.loop.call_later(self._sweep_seconds(), self._sweep)

    def _check(self, now: float) -> None:
        """Past the deadline: time out, unless the server itself stopped reading the body (the
        app is not consuming it yet), which restarts the body's allowance."""
        if now < self._deadline:
            return
        if self._phase == "body" and self.flow is not None and self.flow.read_paused:
            self._deadline = now + self.limits.body_timeout
            return
        self._time_out()

    def _time_out(self) -> None:
        phase, limits = self._phase, self.limits
        self._phase = None
        self.on_close(f"{phase}_timeout")
        if phase == "head":
            detail = f"request head not complete within request_head_timeout_seconds=" \
                     f"{limits.head_timeout:g}"
        else:
            detail = (f"request body arrived slower than request_body_min_bytes_per_second="
                      f"{limits.body_min_rate:g} for more than request_body_timeout_seconds="
                      f"{limits.body_timeout:g}")
        cycle = self.cycle
        answered = False  # a reply to this request has begun: no 408 can follow it
        if phase == "body" and cycle is not None:
            answered = cycle.response_started
            if not cycle.response_complete:
                # a key of ours in the scope (ASGI allows extra keys; the TypedDict does not)
                cycle.scope[TIMED_OUT] = True  # type: ignore[literal-required]
                cycle.disconnected = True  # the app's receive() now says the client is gone
                cycle.message_event.set()
        if not answered and not self.transport.is_closing():
            self.transport.write(canned_reply(RequestTimeout(detail)))
        self.transport.close()


def bounded_protocol(
    limits: ConnectionLimits, on_close: Callable[[str], None]
) -> type[BoundedHttpProtocol]:
    """The protocol class for one server (uvicorn.Config(http=...) takes a class)."""
    return type("BoundedHttpProtocol", (BoundedHttpProtocol,),
                {"limits": limits, "on_close": staticmethod(on_close)})
