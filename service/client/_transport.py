"""A lean HTTP/1.1 transport for the sync client: httpx's transport interface over plain
sockets, with kept-alive connections.

Why not httpx's own transport: it parses replies in pure Python (h11) a 64 KiB chunk at a time,
which costs more CPU than the request itself for the ~1 MiB replies of a lookup. Why not
http.client: it sends the head and the body of a request in two writes (the server wakes up
twice), and parses reply headers with the email package; a 32-id lookup cost 265 us through it
against 70 us over a bare socket (bench/compare.py's machine). Here a request goes out in one
sendmsg (head and body gathered, the body not copied), the reply head is peeked, and a body of
known length is received in one call straight into the bytes object handed back (MSG_WAITALL:
no chunk joined, no copy). TLS sockets and chunked or unsized bodies take a plain buffered path.
Errors are raised as httpx's exception types, so retries treat every transport alike; any httpx
transport can be passed to the client instead (tests pass ASGI ones and fault injectors).
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import threading
from collections.abc import Mapping

import httpx

ConnectionKey = tuple[str, str, int]
MAX_HEAD_BYTES = 64 * 2**10
SMALL_BODY_BYTES = 64 * 2**10  # up to this, read with the head and copied out of it
NO_BODY_STATUSES = frozenset({204, 304})
Headers = list[tuple[bytes, bytes]]


class Connection:
    """One kept-alive connection. On plain sockets, timeouts are the kernel's (SO_RCVTIMEO,
    SO_SNDTIMEO) on a blocking socket, so MSG_WAITALL can wait for a whole body in one call."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.plain = not isinstance(sock, ssl.SSLSocket)
        self.pending = bytearray()  # received, not yet consumed (buffered path)
        self.timeout: float | None = -1.0  # the one set last

    def set_timeout(self, seconds: float | None) -> None:
        if seconds == self.timeout:
            return
        self.timeout = seconds
        if not self.plain:
            self.sock.settimeout(seconds)
            return
        whole, micros = 0, 0  # 0 s: no timeout
        if seconds is not None:
            whole, micros = int(seconds), int((seconds - int(seconds)) * 1e6)
            micros = micros or (0 if whole else 1)  # a timeout, however short, is not none
        value = struct.pack("ll", whole, micros)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)

    def dropped(self) -> bool:
        """An idle kept-alive connection the server has closed (or sent junk on) reads as ready."""
        if self.pending:
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def send(self, head: bytes, body: bytes) -> None:
        """Head and body in one write where the socket allows (sendmsg gathers, no copy)."""
        try:
            if not self.plain:
                self.sock.sendall(head + body)
                return
            views = [memoryview(head), memoryview(body)] if body else [memoryview(head)]
            while views:
                sent = self.sock.sendmsg(views)
                while sent and views:
                    if sent >= len(views[0]):
                        sent -= len(views.pop(0))
                    else:
                        views[0] = views[0][sent:]
                        sent = 0
        except BlockingIOError as error:  # SO_SNDTIMEO ran out
            raise TimeoutError("timed out") from error

    # -- receiving -------------------------------------------------------------------------
    def _receive(self, size: int, flags: int = 0) -> bytes:
        try:
            data = self.sock.recv(size, flags)
        except BlockingIOError as error:  # SO_RCVTIMEO ran out
            raise TimeoutError("timed out") from error
        if not data:
            raise ConnectionResetError("the server closed the connection")
        return data

    def peek_head(self) -> tuple[bytes, int] | None:
        """(bytes available now, length of the head in them), without consuming them; None
        when the head is not all there yet (or on TLS): then read_until is used."""
        if not self.plain or self.pending:
            return None
        available = self._receive(MAX_HEAD_BYTES, socket.MSG_PEEK)
        end = available.find(b"\r\n\r\n")
        return (available, end + 4) if end >= 0 else None

    def receive_exactly(self, count: int) -> bytes:
        """`count` bytes: on a plain socket with nothing buffered, in one bytes object received
        in place (no copy); else gathered from the buffer and further reads."""
        if self.plain and not self.pending and count:
            data = self._receive(count, socket.MSG_WAITALL)
            if len(data) == count:
                return data
            self.pending += data  # interrupted (a signal): finish on the buffered path
        while len(self.pending) < count:
            self.pending += self._receive(max(65536, count - len(self.pending)))
        found = bytes(self.pending[:count])
        del self.pending[:count]
        return found

    def read_until(self, delimiter: bytes, max_bytes: int) -> bytes:
        start = 0
        while (end := self.pending.find(delimiter, start)) < 0:
            if len(self.pending) > max_bytes:
                raise httpx.RemoteProtocolError(f"no {delimiter!r} within {max_bytes} bytes")
            start = max(0, len(self.pending) - len(delimiter) + 1)
            self.pending += self._receive(65536)
        found = bytes(self.pending[:end])
        del self.pending[: end + len(delimiter)]
        return found

    def read_to_end(self) -> bytes:
        chunks = [bytes(self.pending)]
        self.pending.clear()
        while True:
            try:
                chunks.append(self._receive(65536))
            except ConnectionResetError:
                return b"".join(chunks)

    def close(self) -> None:
        self.sock.close()


def parse_head(head: bytes) -> tuple[int, bytes, Headers]:
    """Status, reason phrase and headers of a reply head (without its blank line)."""
    status_line, *lines = head.split(b"\r\n")
    version, _, rest = status_line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if not version.startswith(b"HTTP/1.") or not code.isdigit():
        raise httpx.RemoteProtocolError(f"not an HTTP/1.1 reply: {status_line[:80]!r}")
    headers = []
    for line in lines:
        name, _, value = line.partition(b":")
        headers.append((name.strip(), value.strip()))
    return int(code), reason, headers


def read_reply(connection: Connection, method: str) -> tuple[int, bytes, Headers, bytes, bool]:
    """Status, reason, headers, body, and whether the connection may be used again."""
    peeked = connection.peek_head()
    if peeked is None:
        head_bytes = connection.read_until(b"\r\n\r\n", MAX_HEAD_BYTES)
    else:
        available, head_length = peeked
        head_bytes = available[: head_length - 4]
    status, reason, headers = parse_head(head_bytes)
    fields = {name.lower(): value for name, value in headers}
    keep_alive = fields.get(b"connection", b"").lower() != b"close"
    length = fields.get(b"content-length")
    no_body = method == "HEAD" or status in NO_BODY_STATUSES or 100 <= status < 200
    chunked = fields.get(b"transfer-encoding", b"").lower() == b"chunked"
    if peeked is not None:
        if not no_body and not chunked and length is not None and length.isdigit():
            size = int(length)
            if size <= SMALL_BODY_BYTES:  # one read, waiting for all of it; one small copy
                data = connection.receive_exactly(head_length + size)
                return status, reason, headers, data[head_length:], keep_alive
            connection.receive_exactly(head_length)  # then the body, in place
            return status, reason, headers, connection.receive_exactly(size), keep_alive
        connection.receive_exactly(head_length)
    if no_body:
        return status, reason, headers, b"", keep_alive
    if chunked:
        chunks: list[bytes] = []
        while True:
            size = int(connection.read_until(b"\r\n", 1024).split(b";")[0], 16)
            if size == 0:
                while connection.read_until(b"\r\n", MAX_HEAD_BYTES):  # trailers
                    pass
                return status, reason, headers, b"".join(chunks), keep_alive
            chunks.append(connection.receive_exactly(size))
            connection.receive_exactly(2)
    if length is not None:
        return status, reason, headers, connection.receive_exactly(int(length)), keep_alive
    return status, reason, headers, connection.read_to_end(), False  # runs to the end


class PooledHTTPTransport(httpx.BaseTransport):
    """Keeps up to `max_idle` connections per host open between requests. Thread-safe: each
    request takes a connection of its own from the pool (or opens one)."""

    def __init__(self, max_idle: int = 16, ssl_context: ssl.SSLContext | None = None) -> None:
        self.max_idle = max_idle
        self.ssl_context = ssl_context
        self._idle: dict[ConnectionKey, list[Connection]] = {}
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        default_port = 443 if url.scheme == "https" else 80
        key: ConnectionKey = (url.scheme, url.host, url.port or default_port)
        lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), url.raw_path)]
        if b"host" not in (name.lower() for name, _ in request.headers.raw):
            lines.append(b"Host: " + url.netloc)
        lines += [name + b": " + value for name, value in request.headers.raw]
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        return self.exchange(key, request.method, head, request.read(),
                             request.extensions.get("timeout", {}), request)

    def exchange(
        self, key: ConnectionKey, method: str, head: bytes, body: bytes,
        timeouts: Mapping[str, float | None], request: httpx.Request | None = None,
    ) -> httpx.Response:
        """Send a request given as its head (request line and headers, blank line included)
        and body; the reply, read. What handle_request does once it has the bytes; the client
        calls it directly, skipping the httpx.Request (about 20 us a call)."""
        connection = self._take(key) or self._connect(key, timeouts.get("connect"), request)
        phase = "write"
        try:
            connection.set_timeout(timeouts.get("write"))
            connection.send(head, body)
            phase = "read"
            connection.set_timeout(timeouts.get("read"))
            status, reason, headers, content, keep_alive = read_reply(connection, method)
        except BaseException as error:
            connection.close()
            converted = as_httpx_error(error, phase, request)
            if converted is error:
                raise
            raise converted from error
        if keep_alive:
            self._give_back(key, connection)
        else:
            connection.close()
        return httpx.Response(
            status, headers=headers, content=content,
            extensions={"reason_phrase": reason, "http_version": b"HTTP/1.1"},
        )

    def _take(self, key: ConnectionKey) -> Connection | None:
        with self._lock:
            idle = self._idle.get(key, [])
            while idle:
                connection = idle.pop()
                if not connection.dropped():
                    return connection
                connection.close()
        return None

    def _connect(
        self, key: ConnectionKey, timeout: float | None, request: httpx.Request | None
    ) -> Connection:
        scheme, host, port = key
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                context = self.ssl_context or ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=host)
            else:
                sock.settimeout(None)  # blocking: timeouts are set on the socket itself
        except TimeoutError as error:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out",
                                       request=request) from error
        except OSError as error:
            raise httpx.ConnectError(f"{host}:{port}: {error}", request=request) from error
        return Connection(sock)

    def _give_back(self, key: ConnectionKey, connection: Connection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.max_idle:
                idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        with self._lock:
            connections = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for connection in connections:
            connection.close()


def as_httpx_error(
    error: BaseException, phase: str, request: httpx.Request | None
) -> BaseException:
    """httpx's exception for a failure while writing the request or reading the reply."""
    if isinstance(error, httpx.TransportError):
        return error
    if isinstance(error, TimeoutError):
        cls = httpx.WriteTimeout if phase == "write" else httpx.ReadTimeout
        return cls(f"{phase} timed out", request=request)
    if isinstance(error, OSError | ValueError):
        doing = "writing the request" if phase == "write" else "reading the reply"
        return httpx.RemoteProtocolError(
            f"connection lost or reply malformed while {doing}: {type(error).__name__} {error}",
            request=request)
    return error  # KeyboardInterrupt and the like pass through unchanged
