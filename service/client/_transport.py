"""A lean HTTP/1.1 transport for the sync client: httpx's transport interface over the standard
library's http.client, with kept-alive connections.

Why not httpx's own transport: it parses replies in pure Python (h11) a 64 KiB chunk at a time,
which costs more CPU than the request itself for the ~1 MiB replies of a lookup (measured in
bench/client_overhead.py). http.client reads a body of known length in one call. Errors are raised
as httpx's exception types, so retries treat both transports alike; any httpx transport can be
passed to the client instead (tests pass ASGI ones and fault injectors).
"""

from __future__ import annotations

import http.client
import select
import ssl
import threading

import httpx

ConnectionKey = tuple[str, str, int]


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """An idle kept-alive connection the server has closed (or sent junk on) reads as ready."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class PooledHTTPTransport(httpx.BaseTransport):
    """Keeps up to `max_idle` connections per host open between requests. Thread-safe: each
    request takes a connection of its own from the pool (or opens one)."""

    def __init__(self, max_idle: int = 16, ssl_context: ssl.SSLContext | None = None) -> None:
        self.max_idle = max_idle
        self.ssl_context = ssl_context
        self._idle: dict[ConnectionKey, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        url = request.url
        default_port = 443 if url.scheme == "https" else 80
        key: ConnectionKey = (url.scheme, url.host, url.port or default_port)
        connection = self._take(key, timeouts.get("connect"))
        body = request.read()
        target = url.raw_path.decode("ascii")
        try:
            if connection.sock is None:
                try:
                    connection.connect()
                except TimeoutError as error:
                    raise httpx.ConnectTimeout(str(error), request=request) from error
                except OSError as error:
                    raise httpx.ConnectError(str(error) or type(error).__name__,
                                             request=request) from error
            connection.sock.settimeout(timeouts.get("read"))
            connection.putrequest(request.method, target, skip_host=True,
                                  skip_accept_encoding=True)
            for name, value in request.headers.raw:
                connection.putheader(name, value)
            connection.endheaders(body or None)
            reply = connection.getresponse()
            content = reply.read()
        except httpx.TransportError:
            connection.close()
            raise
        except TimeoutError as error:
            connection.close()
            raise httpx.ReadTimeout(str(error) or "timed out", request=request) from error
        except (http.client.HTTPException, OSError) as error:
            connection.close()
            raise httpx.RemoteProtocolError(
                f"{type(error).__name__}: {error}" if str(error) else type(error).__name__,
                request=request,
            ) from error
        if reply.will_close:
            connection.close()
        else:
            self._give_back(key, connection)
        return httpx.Response(
            reply.status,
            headers=reply.getheaders(),
            content=content,
            extensions={"reason_phrase": reply.reason.encode("latin-1"),
                        "http_version": b"HTTP/1.1"},
        )

    def _take(
        self, key: ConnectionKey, connect_timeout: float | None
    ) -> http.client.HTTPConnection:
        with self._lock:
            idle = self._idle.get(key, [])
            while idle:
                connection = idle.pop()
                if not _dropped(connection):
                    return connection
                connection.close()
        scheme, host, port = key
        if scheme == "https":
            return http.client.HTTPSConnection(
                host, port, timeout=connect_timeout,
                context=self.ssl_context or ssl.create_default_context(),
            )
        return http.client.HTTPConnection(host, port, timeout=connect_timeout)

    def _give_back(self, key: ConnectionKey, connection: http.client.HTTPConnection) -> None:
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
