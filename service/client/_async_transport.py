"""The async client's transport: httpx's async transport interface over non-blocking sockets,
with kept-alive connections; requests written by h11 and replies parsed by httptools, as in the
sync transport (service.client._http11 is the part they share, and says why).

The socket is the one the sync transport would use, set non-blocking: a call that would block
waits for the socket with anyio.wait_readable / wait_writable, which every event loop anyio
runs on provides (asyncio's, uvloop, trio; on Windows' proactor loop anyio serves them from a
selector thread of its own). Reading the socket directly, rather than through an event loop's
stream, lets a long body be received straight into its buffer as on the sync side, and spares
the stream's own copies and scheduling rounds. TLS is the ssl module's non-blocking SSLSocket
(it says when it wants to read or write). Errors are raised as httpx's exception types.
"""

from __future__ import annotations

import math
import os
import socket
import ssl
from collections.abc import Mapping

import anyio
import httpx

from service.client import _http11 as http11
from service.client._http11 import Origin, Prepared
from service.client._replies import Reply


async def send_all(sock: socket.socket, data: bytes) -> None:
    """All of data, waiting whenever the socket's buffer is full."""
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
            await anyio.wait_writable(sock)
        except ssl.SSLWantReadError:
            await anyio.wait_readable(sock)


class Connection:
    """One kept-alive connection: a non-blocking socket and llhttp's state of it (its Reply)."""

    __slots__ = ("sock", "reply")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reply = Reply()

    async def exchange(
        self, request: Prepared, timeouts: Mapping[str, float | None],
        original: httpx.Request | None,
    ) -> tuple[http11.Response, bool]:
        """Send one request and read its reply, and whether the connection may be used again;
        the caller closes it on error. When sending fails, the reply is still read (a server
        may refuse a body over its limit, reply 413 and close), and returned if it is whole."""
        phase = "write"
        lost: OSError | None = None  # sending failed: the reply, if any, says why
        reply, sock = self.reply, self.sock
        reply.start(request.method)
        try:
            with anyio.fail_after(timeouts.get("write")) as deadline:
                try:
                    for piece in http11.request_bytes(request):
                        await send_all(sock, piece)
                except OSError as error:
                    lost = error
                phase = "read"
                read_timeout = timeouts.get("read")
                deadline.deadline = (math.inf if read_timeout is None
                                     else anyio.current_time() + read_timeout)
                while not reply.complete:
                    space = reply.space()
                    try:
                        if space is None:
                            reply.receive(sock.recv(http11.RECEIVE_BYTES))
                        else:
                            reply.received_in_place(sock.recv_into(space))
                    except ssl.SSLWantWriteError:
                        await anyio.wait_writable(sock)
                    except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                        await anyio.wait_readable(sock)
        except Exception as error:
            cause = error if lost is None else lost
            raise http11.as_httpx_error(cause, "write" if lost else phase, original) from error
        response = http11.Response(reply.status, reply.reason, reply.headers, reply.content())
        return response, lost is None and reply.reusable and not reply.past

    def close(self) -> None:
        self.reply.forget()
        self.sock.close()


class PooledAsyncHTTPTransport(httpx.AsyncBaseTransport):
    """Keeps up to `max_idle` connections per origin open between requests; each request takes a
    connection of its own. Use it from one event loop at a time (its connections are plain
    sockets: any loop may use them, one after another)."""

    def __init__(self, max_idle: int = 16, ssl_context: ssl.SSLContext | None = None) -> None:
        self.max_idle = max_idle
        self.ssl_context = ssl_context
        self._idle: dict[Origin, list[Connection]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        timeouts = request.extensions.get("timeout", {})
        return (await self.send(http11.prepared(request), timeouts, request)).as_httpx()

    async def send(
        self, request: Prepared, timeouts: Mapping[str, float | None],
        original: httpx.Request | None = None,
    ) -> http11.Response:
        """What handle_async_request does, for a request the client prepared itself, and with
        the reply as the transport read it (no httpx.Request nor httpx.Response to build)."""
        origin = request.origin
        connection = self._take(origin)
        if connection is None:
            connection = await self._connect(origin, timeouts.get("connect"), original)
        try:
            response, reusable = await connection.exchange(request, timeouts, original)
        except BaseException:
            connection.close()
            raise
        if reusable:
            self._give_back(origin, connection)
        else:
            connection.close()
        return response

    def _take(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin, [])
        while idle:
            connection = idle.pop()
            if not http11.readable_now(connection.sock):
                return connection
            connection.close()  # closed by the server while idle
        return None

    async def _connect(
        self, origin: Origin, timeout: float | None, request: httpx.Request | None
    ) -> Connection:
        scheme, host, port = origin
        try:
            with anyio.fail_after(timeout):
                sock = await open_socket(host, port)
                if scheme == "https":
                    sock = await start_tls(sock, host, self.ssl_context)
        except TimeoutError as error:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out",
                                       request=request) from error
        except OSError as error:
            raise httpx.ConnectError(f"{host}:{port}: {error}", request=request) from error
        return Connection(sock)

    def _give_back(self, origin: Origin, connection: Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) < self.max_idle:
            idle.append(connection)
        else:
            connection.close()

    async def aclose(self) -> None:
        connections = [c for idle in self._idle.values() for c in idle]
        self._idle.clear()
        for connection in connections:
            connection.close()


async def open_socket(host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket (TCP_NODELAY) to the first of host's addresses that
    accepts, in getaddrinfo's order, as socket.create_connection does."""
    error: OSError | None = None
    for family, kind, proto, _, address in await anyio.getaddrinfo(
            host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                sock.connect(address)
            except (BlockingIOError, InterruptedError):
                await anyio.wait_writable(sock)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise OSError(code, os.strerror(code)) from None
            return sock
        except OSError as failed:
            sock.close()
            error = failed
        except BaseException:
            sock.close()
            raise
    raise error or OSError(f"no address found for {host}")


async def start_tls(
    sock: socket.socket, host: str, context: ssl.SSLContext | None
) -> ssl.SSLSocket:
    """The socket wrapped in TLS, the handshake done without blocking."""
    tls = (context or ssl.create_default_context()).wrap_socket(
        sock, server_hostname=host, do_handshake_on_connect=False)
    try:
        while True:
            try:
                tls.do_handshake()
                return tls
            except ssl.SSLWantReadError:
                await anyio.wait_readable(tls)
            except ssl.SSLWantWriteError:
                await anyio.wait_writable(tls)
    except BaseException:
        tls.close()
        raise
