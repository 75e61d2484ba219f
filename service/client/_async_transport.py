"""A lean HTTP/1.1 transport for the async client: httpx's async transport interface over anyio
byte streams (asyncio or trio), with kept-alive connections.

The reason is the sync transport's (service/client/_transport.py): httpx's own transport parses
replies through h11 a chunk at a time, which made a 1 MiB lookup reply cost about three times the
wire time. Here the head is read up to its blank line and the body is gathered with one copy
(chunk by chunk for Transfer-Encoding: chunked). Errors are raised as httpx's exception types.
"""

from __future__ import annotations

import select
import ssl
from dataclasses import dataclass

import anyio
import httpx
from anyio.abc import ByteStream, SocketAttribute
from anyio.lowlevel import current_token

from service.client._transport import parse_head

ConnectionKey = tuple[str, str, int]
MAX_HEAD_BYTES = 64 * 2**10
NO_BODY_STATUSES = frozenset({204, 304})


class Reader:
    """Bytes of a stream read up to a delimiter or a length. A large body is joined from the
    received chunks with one copy (anyio's BufferedByteReceiveStream copies it three times)."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.pending = bytearray()

    async def receive_until(self, delimiter: bytes, max_bytes: int) -> bytes:
        start = 0
        while (end := self.pending.find(delimiter, start)) < 0:
            if len(self.pending) > max_bytes:
                raise httpx.RemoteProtocolError(f"no {delimiter!r} within {max_bytes} bytes")
            start = max(0, len(self.pending) - len(delimiter) + 1)
            self.pending += await self.stream.receive(65536)
        found = bytes(self.pending[:end])
        del self.pending[: end + len(delimiter)]
        return found

    async def receive_exactly(self, count: int) -> bytes:
        if len(self.pending) >= count:
            found = bytes(self.pending[:count])
            del self.pending[:count]
            return found
        chunks = [bytes(self.pending)]
        received = len(self.pending)
        while received < count:
            chunk = await self.stream.receive(max(count - received, 65536))
            chunks.append(chunk)
            received += len(chunk)
        found = b"".join(chunks)  # the one copy of a large body
        self.pending = bytearray(found[count:])
        return found[:count] if received > count else found

    async def receive(self) -> bytes:
        if self.pending:
            found = bytes(self.pending)
            self.pending.clear()
            return found
        return await self.stream.receive(65536)


@dataclass(slots=True)
class Connection:
    stream: ByteStream
    reader: Reader
    loop: object  # the event loop it belongs to (anyio.lowlevel.current_token())

    def dropped(self) -> bool:
        """An idle kept-alive connection the server has closed (or sent junk on) reads as ready."""
        if self.reader.pending:
            return True
        sock = self.stream.extra(SocketAttribute.raw_socket, None)
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)


class PooledAsyncHTTPTransport(httpx.AsyncBaseTransport):
    """Keeps up to `max_idle` connections per host open between requests; each request takes a
    connection of its own. Use it from one event loop."""

    def __init__(self, max_idle: int = 16, ssl_context: ssl.SSLContext | None = None) -> None:
        self.max_idle = max_idle
        self.ssl_context = ssl_context
        self._idle: dict[ConnectionKey, list[Connection]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        url = request.url
        default_port = 443 if url.scheme == "https" else 80
        key: ConnectionKey = (url.scheme, url.host, url.port or default_port)
        connection = await self._take(key)
        if connection is None:
            connection = await self._connect(key, timeouts.get("connect"), request)
        body = await request.aread()
        head = [f"{request.method} {url.raw_path.decode('ascii')} HTTP/1.1".encode()]
        head += [name + b": " + value for name, value in request.headers.raw]
        message = b"\r\n".join(head) + b"\r\n\r\n" + body
        phase = "write"
        try:
            with anyio.fail_after(timeouts.get("write")):
                await connection.stream.send(message)
            phase = "read"
            with anyio.fail_after(timeouts.get("read")):
                status, reason, headers = await read_head(connection.reader)
                content, keep_alive = await read_body(
                    connection.reader, request.method, status, headers
                )
        except BaseException as error:
            with anyio.CancelScope(shield=True):
                await connection.stream.aclose()
            converted = as_httpx_error(error, phase, request)
            if converted is error:
                raise
            raise converted from error
        if keep_alive:
            await self._give_back(key, connection)
        else:
            await connection.stream.aclose()
        return httpx.Response(
            status, headers=headers, content=content,
            extensions={"reason_phrase": reason, "http_version": b"HTTP/1.1"},
        )

    async def _take(self, key: ConnectionKey) -> Connection | None:
        idle = self._idle.get(key, [])
        loop = current_token()
        while idle:
            connection = idle.pop()
            if connection.loop != loop:  # left by an event loop that has ended
                connection.stream.extra(SocketAttribute.raw_socket).close()
            elif connection.dropped():
                await connection.stream.aclose()
            else:
                return connection
        return None

    async def _connect(
        self, key: ConnectionKey, timeout: float | None, request: httpx.Request
    ) -> Connection:
        scheme, host, port = key
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
        return Connection(stream, Reader(stream), current_token())

    async def _give_back(self, key: ConnectionKey, connection: Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) < self.max_idle:
            idle.append(connection)
        else:
            await connection.stream.aclose()

    async def aclose(self) -> None:
        connections = [c for idle in self._idle.values() for c in idle]
        self._idle.clear()
        for connection in connections:
            await connection.stream.aclose()


async def read_head(
    reader: Reader,
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Status, reason phrase and headers of a reply, up to its blank line."""
    return parse_head(await reader.receive_until(b"\r\n\r\n", MAX_HEAD_BYTES))


async def read_body(
    reader: Reader, method: str, status: int,
    headers: list[tuple[bytes, bytes]],
) -> tuple[bytes, bool]:
    """The reply body, and whether the connection may be used again."""
    fields = {name.lower(): value for name, value in headers}
    keep_alive = fields.get(b"connection", b"").lower() != b"close"
    if method == "HEAD" or status in NO_BODY_STATUSES or 100 <= status < 200:
        return b"", keep_alive
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        chunks: list[bytes] = []
        while True:
            size = int((await reader.receive_until(b"\r\n", 1024)).split(b";")[0], 16)
            if size == 0:
                while await reader.receive_until(b"\r\n", MAX_HEAD_BYTES):  # trailers
                    pass
                return b"".join(chunks), keep_alive
            chunks.append(await reader.receive_exactly(size))
            await reader.receive_exactly(2)
    length = fields.get(b"content-length")
    if length is not None:
        return await reader.receive_exactly(int(length)), keep_alive
    chunks = []  # no length: the body runs to the end of the connection
    try:
        while True:
            chunks.append(await reader.receive())
    except anyio.EndOfStream:
        return b"".join(chunks), False


def as_httpx_error(error: BaseException, phase: str, request: httpx.Request) -> BaseException:
    """httpx's exception for a failure while writing the request or reading the reply."""
    if isinstance(error, httpx.TransportError):
        return error
    if isinstance(error, TimeoutError):
        cls = httpx.WriteTimeout if phase == "write" else httpx.ReadTimeout
        return cls(f"{phase} timed out", request=request)
    if isinstance(error, anyio.EndOfStream | anyio.IncompleteRead | anyio.BrokenResourceError
                  | anyio.DelimiterNotFound | anyio.ClosedResourceError | OSError | ValueError):
        doing = "writing the request" if phase == "write" else "reading the reply"
        return httpx.RemoteProtocolError(
            f"connection lost or reply malformed while {doing}: {type(error).__name__} {error}",
            request=request)
    return error  # cancellation and the like pass through unchanged
