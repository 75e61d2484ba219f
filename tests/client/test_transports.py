"""The client's own HTTP/1.1 transports (sync: http.client, async: anyio) against a scripted
loopback server: chunked bodies, bodies up to the end of the connection, Connection: close,
kept-alive connections the server has closed meanwhile, timeouts."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import anyio
import httpx
import pytest

from service.client import EmbeddingClient, ServerUnavailableError
from service.client._async_transport import PooledAsyncHTTPTransport
from service.client._transport import PooledHTTPTransport

# (request bytes) -> (reply bytes, close the connection after it)
Script = Callable[[bytes], tuple[bytes, bool]]


class ScriptedServer:
    """Answers each request on 127.0.0.1 with what `script` says; counts connections."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.serve, args=(connection,), daemon=True).start()

    def serve(self, connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):  # the client may hang up first
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(data) < length:
                    data += connection.recv(65536)
                body, data = data[:length], data[length:]
                reply, close = self.script(head + b"\r\n\r\n" + body)
                if reply:
                    connection.sendall(reply)
                if close:
                    return


@pytest.fixture
def scripted() -> Iterator[Callable[[Script], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(script: Script) -> ScriptedServer:
        servers.append(ScriptedServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.listener.close()


def send_sync(url: str, transport: PooledHTTPTransport, read: float = 5.0) -> httpx.Response:
    request = httpx.Request("GET", url + "/x", extensions={"timeout": {"connect": 5, "read": read}})
    response = transport.handle_request(request)
    response.read()
    return response


async def send_async(
    url: str, transport: PooledAsyncHTTPTransport, read: float = 5.0
) -> httpx.Response:
    request = httpx.Request("GET", url + "/x", extensions={"timeout": {"connect": 5, "read": read}})
    response = await transport.handle_async_request(request)
    await response.aread()
    return response


CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kind: chunked\r\n\r\n"
           b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: t\r\n\r\n")
TO_THE_END = b"HTTP/1.1 200 OK\r\nX-Kind: eof\r\n\r\nuntil the end"
CLOSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
KEEP = b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\nkept"


@pytest.mark.parametrize("side", ["sync", "async"])
@pytest.mark.parametrize(
    ("reply", "close", "content"),
    [(CHUNKED, False, b"hello, world"), (TO_THE_END, True, b"until the end"),
     (CLOSE, True, b"ok"), (KEEP, False, b"kept")],
)
def test_reply_framings(
    scripted: Callable[[Script], ScriptedServer], side: str, reply: bytes, close: bool,
    content: bytes,
) -> None:
    server = scripted(lambda request: (reply, close))
    if side == "sync":
        sync_transport = PooledHTTPTransport()
        responses = [send_sync(server.url, sync_transport) for _ in range(2)]
        sync_transport.close()
    else:
        async_transport = PooledAsyncHTTPTransport()

        async def send_two() -> list[httpx.Response]:
            responses = [await send_async(server.url, async_transport) for _ in range(2)]
            await async_transport.aclose()
            return responses

        responses = anyio.run(send_two)
    assert [r.content for r in responses] == [content, content]
    assert responses[0].status_code == int(reply[9:12])
    assert server.connections == (2 if close else 1)  # kept alive unless the server closes


@pytest.mark.parametrize("side", ["sync", "async"])
def test_kept_alive_connection_closed_by_the_server(
    scripted: Callable[[Script], ScriptedServer], side: str
) -> None:
    """The server closes an idle connection (its keep-alive timeout) without saying so: the next
    request goes out on a fresh connection instead of failing."""
    server = scripted(lambda request: (KEEP, True))  # closes after answering, header or not
    if side == "sync":
        sync_transport = PooledHTTPTransport()
        first = send_sync(server.url, sync_transport)
        time.sleep(0.1)  # the close reaches the client
        second = send_sync(server.url, sync_transport)
        sync_transport.close()
    else:
        async_transport = PooledAsyncHTTPTransport()

        async def send_two() -> tuple[httpx.Response, httpx.Response]:
            first = await send_async(server.url, async_transport)
            await anyio.sleep(0.1)
            second = await send_async(server.url, async_transport)
            await async_transport.aclose()
            return first, second

        first, second = anyio.run(send_two)
    assert (first.content, second.content, server.connections) == (b"kept", b"kept", 2)


@pytest.mark.parametrize("side", ["sync", "async"])
def test_read_timeout(scripted: Callable[[Script], ScriptedServer], side: str) -> None:
    server = scripted(lambda request: (b"", False))  # never answers
    if side == "sync":
        with pytest.raises(httpx.ReadTimeout):
            send_sync(server.url, PooledHTTPTransport(), read=0.2)
    else:
        with pytest.raises(httpx.ReadTimeout):
            anyio.run(lambda: send_async(server.url, PooledAsyncHTTPTransport(), read=0.2))


def test_client_read_timeout_becomes_server_unavailable(
    scripted: Callable[[Script], ScriptedServer],
) -> None:
    server = scripted(lambda request: (b"", False))
    client = EmbeddingClient(server.url, read_timeout=0.1, retries=1, backoff=0.001)
    with client, pytest.raises(ServerUnavailableError) as caught:
        client.health()
    assert "ReadTimeout" in caught.value.detail and "after 2 attempt(s)" in caught.value.detail
    assert server.connections == 2  # a timed-out connection is not reused


@pytest.mark.parametrize("side", ["sync", "async"])
def test_garbage_reply(scripted: Callable[[Script], ScriptedServer], side: str) -> None:
    server = scripted(lambda request: (b"SSH-2.0-OpenSSH\r\n\r\n", True))
    with pytest.raises(httpx.RemoteProtocolError):
        if side == "sync":
            send_sync(server.url, PooledHTTPTransport())
        else:
            anyio.run(send_async, server.url, PooledAsyncHTTPTransport())
