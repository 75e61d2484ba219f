"""The sync client's transport: httpx's transport interface over plain sockets, with kept-alive
connections, HTTP/1.1 written by h11 and parsed by httptools (service.client._http11 says why).

Only what every platform's socket module has is used (connect, send, recv, recv_into,
settimeout; the socket's own timeouts wait with poll(), not select()), so it runs the same on
Windows, and with any number of open files. A long reply body is received straight into its
buffer (service.client._replies). Errors are raised as httpx's exception types, so retries
treat every transport alike; any httpx transport can be passed to the client instead (tests
pass ASGI ones and fault injectors).
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Mapping

import httpx

from service.client import _http11 as http11
from service.client._http11 import Origin, Prepared
from service.client._replies import Reply


class Connection:
    """One kept-alive connection: a socket and llhttp's state of it (its Reply)."""

    __slots__ = ("sock", "reply", "timeout")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reply = Reply()
        self.timeout: float | None = -1.0  # the one set last

    def set_timeout(self, seconds: float | None) -> None:
        if seconds != self.timeout:
            self.sock.settimeout(seconds)
            self.timeout = seconds

    def exchange(
        self, request: Prepared, timeouts: Mapping[str, float | None],
        original: httpx.Request | None,
    ) -> tuple[http11.Response, bool]:
        """Send one request and read its reply, and whether the connection may be used again;
        the caller closes it on error. A server may refuse a request before reading all of it
        and close (a 413 for a body over its limit): when sending fails, its reply is still
        read, and returned if it is whole. A long body is received straight into its buffer
        (Reply.space): the kernel's copy is the only one."""
        return self.read(self.write(request, timeouts, original), timeouts, original)

    def write(self, request: Prepared, timeouts: Mapping[str, float | None],
              original: httpx.Request | None) -> OSError | None:
        """Send the request; the error that stopped the sending (the reply, if any, may say
        why: read it), or None."""
        self.reply.start(request.method)
        sock = self.sock
        try:
            self.set_timeout(timeouts.get("write"))
            for piece in http11.request_bytes(request):
                view = memoryview(piece)
                while view:  # the write timeout bounds each send, as the read one each
                    view = view[sock.send(view) :]  # recv: a long upload goes on
        except TimeoutError as error:
            raise http11.as_httpx_error(error, "write", original) from error
        except OSError as error:
            return error
        except Exception as error:
            raise http11.as_httpx_error(error, "write", original) from error
        return None

    def read(self, lost: OSError | None, timeouts: Mapping[str, float | None],
             original: httpx.Request | None) -> tuple[http11.Response, bool]:
        """The reply to the request written last (see exchange)."""
        reply, sock = self.reply, self.sock
        try:
            self.set_timeout(timeouts.get("read"))
            while not reply.complete:
                space = reply.space()
                if space is None:
                    reply.receive(sock.recv(http11.RECEIVE_BYTES))
                else:
                    reply.received_in_place(sock.recv_into(space))
        except Exception as error:
            cause = error if lost is None else lost
            raise http11.as_httpx_error(cause, "write" if lost else "read", original) from error
        response = http11.Response(reply.status, reply.reason, reply.headers, reply.content())
        return response, lost is None and reply.reusable and not reply.past

    def close(self) -> None:
        self.reply.forget()
        self.sock.close()


class PooledHTTPTransport(httpx.BaseTransport):
    """Keeps up to `max_idle` connections per origin open between requests. Thread-safe: each
    request takes a connection of its own from the pool (or opens one)."""

    def __init__(self, max_idle: int = 16, ssl_context: ssl.SSLContext | None = None) -> None:
        self.max_idle = max_idle
        self.ssl_context = ssl_context
        self._idle: dict[Origin, list[Connection]] = {}
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        return self.send(http11.prepared(request), timeouts, request).as_httpx()

    def send(
        self, request: Prepared, timeouts: Mapping[str, float | None],
        original: httpx.Request | None = None,
    ) -> http11.Response:
        """What handle_request does, for a request the client prepared itself, and with the
        reply as the transport read it (no httpx.Request nor httpx.Response to build: a good
        part of a small call's cost; a long body not copied into bytes)."""
        origin = request.origin
        connection = self._take(origin) or self._connect(origin, timeouts.get("connect"),
                                                         original)
        try:
            response, reusable = connection.exchange(request, timeouts, original)
        except BaseException:
            connection.close()
            raise
        if reusable:
            self._give_back(origin, connection)
        else:
            connection.close()
        return response

    def send_all(
        self, requests: list[Prepared], timeouts: Mapping[str, float | None],
    ) -> list[http11.Response | httpx.Response | Exception]:
        """Several requests at once, each on a connection of its own (the parts of a request
        split over a table's shards, service.client._routing): every request is written
        first, then every reply read, so the servers work on them together without a thread
        per request. Each reply, or the exception that stopped that one."""
        started: list[tuple[Prepared, Connection | None, OSError | Exception | None]] = []
        for request in requests:
            connection = None
            try:
                connection = self._take(request.origin) or self._connect(
                    request.origin, timeouts.get("connect"), None)
                started.append((request, connection, connection.write(request, timeouts, None)))
            except Exception as error:  # noqa: BLE001 - that request's own failure
                if connection is not None:
                    connection.close()
                started.append((request, None, error))
        replies: list[http11.Response | httpx.Response | Exception] = []
        for request, connection, problem in started:
            if connection is None:
                assert problem is not None
                replies.append(problem)
                continue
            try:
                response, reusable = connection.read(problem, timeouts, None)  # type: ignore
            except Exception as error:  # noqa: BLE001
                connection.close()
                replies.append(error)
                continue
            if reusable:
                self._give_back(request.origin, connection)
            else:
                connection.close()
            replies.append(response)
        return replies

    def _take(self, origin: Origin) -> Connection | None:
        with self._lock:
            idle = self._idle.get(origin, [])
            while idle:
                connection = idle.pop()
                if not http11.readable_now(connection.sock):
                    return connection
                connection.close()  # closed by the server while idle
        return None

    def _connect(
        self, origin: Origin, timeout: float | None, request: httpx.Request | None
    ) -> Connection:
        scheme, host, port = origin
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                context = self.ssl_context or ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=host)
        except TimeoutError as error:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out",
                                       request=request) from error
        except OSError as error:
            raise httpx.ConnectError(f"{host}:{port}: {error}", request=request) from error
        return Connection(sock)

    def _give_back(self, origin: Origin, connection: Connection) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
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
