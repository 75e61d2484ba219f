"""The async client's transport: httpx's async transport interface over anyio byte streams
(asyncio or trio), with kept-alive connections; requests written by h11 and replies parsed by
httptools, as in the sync transport (service.client._http11 is the part they share, and says
why). The event loop hands received bytes over as bytes objects, so a long body is copied once
into its buffer as llhttp passes it on (the sync transport receives it there). Errors are
raised as httpx's exception types.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

import anyio
import httpx
from anyio.abc import ByteStream, SocketAttribute
from anyio.lowlevel import current_token

from service.client import _http11 as http11
from service.client._http11 import Origin, Prepared
from service.client._replies import Reply

STREAM_READ_BYTES = 256 * 2**10  # received at a time: an event loop's stream reads this much
# at most (asyncio's and uvloop's), so its chunks are never split (a split copies the rest)


class Connection:
    """One kept-alive connection: a byte stream, llhttp's state of it (its Reply), and the
    event loop it belongs to (anyio.lowlevel.current_token())."""

    __slots__ = ("stream", "reply", "loop")

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.reply = Reply()
        self.loop = current_token()

    async def exchange(
        self, request: Prepared, timeouts: Mapping[str, float | None],
        original: httpx.Request | None,
    ) -> tuple[http11.Response, bool]:
        """Send one request and read its reply, and whether the connection may be used again;
        the caller closes it on error. When sending fails, the reply is still read (a server
        may refuse a body over its limit, reply 413 and close), and returned if it is whole."""
        phase = "write"
        lost: Exception | None = None  # sending failed: the reply, if any, says why
        reply = self.reply
        reply.start(request.method)
        try:
            with anyio.fail_after(timeouts.get("write")):
                try:
                    for piece in http11.request_bytes(request):
                        await self.stream.send(piece)
                except (anyio.BrokenResourceError, OSError) as error:
                    lost = ConnectionError(f"{type(error).__name__} {error}".strip())
            phase = "read"
            with anyio.fail_after(timeouts.get("read")):
                while not reply.complete:
                    try:
                        data = await self.stream.receive(STREAM_READ_BYTES)
                    except anyio.EndOfStream:
                        data = b""
                    reply.receive(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as error:
            raise http11.as_httpx_error(
                lost or ConnectionError(str(error) or type(error).__name__),
                "write" if lost else phase, original) from error
        except Exception as error:
            cause = error if lost is None else lost
            raise http11.as_httpx_error(cause, "write" if lost else phase, original) from error
        response = http11.Response(reply.status, reply.reason, reply.headers, reply.content())
        return response, lost is None and reply.reusable and not reply.past

    def dropped(self) -> bool:
        """Closed by the server (or sent junk) while idle in the pool."""
        sock = self.stream.extra(SocketAttribute.raw_socket, None)
        return sock is not None and http11.readable_now(sock)

    async def close(self) -> None:
        self.reply.forget()
        with anyio.CancelScope(shield=True):
            await self.stream.aclose()


class PooledAsyncHTTPTransport(httpx.AsyncBaseTransport):
    """Keeps up to `max_idle` connections per origin open between requests; each request takes a
    connection of its own. Use it from one event loop at a time."""

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
        connection = await self._take(origin)
        if connection is None:
            connection = await self._connect(origin, timeouts.get("connect"), original)
        try:
            response, reusable = await connection.exchange(request, timeouts, original)
        except BaseException:
            await connection.close()
            raise
        if reusable:
            await self._give_back(origin, connection)
        else:
            await connection.close()
        return response

    async def _take(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin, [])
        loop = current_token()
        while idle:
            connection = idle.pop()
            if connection.loop != loop:  # left by an event loop that has ended
                connection.stream.extra(SocketAttribute.raw_socket).close()
            elif connection.dropped():
                await connection.close()
            else:
                return connection
        return None

    async def _connect(
        self, origin: Origin, timeout: float | None, request: httpx.Request | None
    ) -> Connection:
        scheme, host, port = origin
        try:
            with anyio.fail_after(timeout):
                if scheme == "https":
                    stream: ByteStream = await anyio.connect_tcp(
                        host, port, tls=True, tls_hostname=host,
                        ssl_context=self.ssl_context or ssl.create_default_context(),
                    )
                else:
                    stream = await anyio.connect_tcp(host, port)
        except TimeoutError as error:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out",
                                       request=request) from error
        except OSError as error:
            raise httpx.ConnectError(f"{host}:{port}: {error}", request=request) from error
        return Connection(stream)

    async def _give_back(self, origin: Origin, connection: Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) < self.max_idle:
            idle.append(connection)
        else:
            await connection.close()

    async def aclose(self) -> None:
        connections = [c for idle in self._idle.values() for c in idle]
        self._idle.clear()
        for connection in connections:
            await connection.close()
