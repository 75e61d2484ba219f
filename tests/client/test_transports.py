"""The client's transports (HTTP/1.1 by h11; sync over sockets, async over anyio streams) against
a scripted loopback server: chunked bodies, bodies up to the end of the connection,
Connection: close in any spelling, HTTP/1.0 replies, bytes past a reply, kept-alive connections
the server has closed meanwhile, timeouts, 1,100 open files, and sockets with only what Windows
has."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest

from service.client import AsyncEmbeddingClient, EmbeddingClient, ServerUnavailableError
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
CLOSE_AMONG_OTHERS = (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: Keep-Alive, CLOSE\r\n"
                      b"\r\nok")
HTTP_1_0 = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"  # 1.0: closed after the reply
HTTP_1_0_KEEP = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
PAST_THE_END = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"  # junk after
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nkept"
KEEP = b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\nkept"
HEALTHY = b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}"
BIG_BODY = bytes(range(256)) * 3906 + bytes(64)  # 1,000,000 bytes: many reads, many pieces
BIG = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + BIG_BODY


@pytest.mark.parametrize("side", ["sync", "async"])
@pytest.mark.parametrize(
    ("reply", "close", "content"),
    [(CHUNKED, False, b"hello, world"), (TO_THE_END, True, b"until the end"),
     (CLOSE, True, b"ok"), (CLOSE_AMONG_OTHERS, True, b"ok"), (HTTP_1_0, True, b"ok"),
     (HTTP_1_0_KEEP, True, b"ok"), (PAST_THE_END, True, b"ok"), (CONTINUE, False, b"kept"),
     (KEEP, False, b"kept"), (BIG, False, BIG_BODY)],
    ids=["chunked", "to-the-end", "close", "close-among-others", "http-1.0",
         "http-1.0-keep-alive", "bytes-past-the-reply", "100-continue", "keep", "big"],
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
    assert responses[0].status_code == (201 if reply is KEEP else 200)
    assert server.connections == (2 if close else 1)  # kept alive unless the reply says not


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


@pytest.fixture
def many_open_files() -> Iterator[None]:
    """1,100 more open file descriptors, so the client's sockets get numbers of 1024 and more
    (select() refuses those; a check on an idle connection built on it called every one
    dropped, and each request opened a new connection)."""
    resource = pytest.importorskip("resource", reason="POSIX only: file descriptor numbers")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1100 + 256
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {wanted}: raise it (ulimit -Hn) "
                        "to run this test")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    descriptors = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        yield
    finally:
        for descriptor in descriptors:
            os.close(descriptor)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("side", ["sync", "async"])
def test_one_connection_is_reused_with_1100_open_files(
    scripted: Callable[[Script], ScriptedServer], many_open_files: None, side: str
) -> None:
    server = scripted(lambda request: (HEALTHY, False))
    if side == "sync":
        with EmbeddingClient(server.url, retries=0) as client:
            fileno = socket.socket().detach()  # the next descriptor: proof of the premise
            os.close(fileno)
            assert fileno >= 1024
            replies = [client.health() for _ in range(5)]
    else:
        async def five() -> list[Any]:
            async with AsyncEmbeddingClient(server.url, retries=0) as client:
                return [await client.health() for _ in range(5)]

        replies = anyio.run(five)
    assert replies == [{"status": "ok"}] * 5
    assert server.connections == 1


class PortableSocket:
    """A socket with only what every platform's sockets have (Windows' have no sendmsg, and
    take SO_RCVTIMEO in another format): anything else is an AttributeError, as on Windows."""

    PORTABLE = frozenset({"sendall", "send", "recv", "recv_into", "settimeout", "gettimeout",
                          "fileno", "close", "shutdown", "getpeername", "getsockname"})

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def setsockopt(self, level: int, option: int, value: int) -> None:
        assert (level, option) == (socket.IPPROTO_TCP, socket.TCP_NODELAY), (level, option)
        self._sock.setsockopt(level, option, value)

    def __getattr__(self, name: str) -> Any:
        if name not in self.PORTABLE:
            raise AttributeError(f"socket has no attribute {name!r} on every platform")
        return getattr(self._sock, name)


@pytest.mark.parametrize("reply", [KEEP, CHUNKED, BIG], ids=["sized", "chunked", "big"])
def test_sync_transport_needs_only_portable_socket_calls(
    scripted: Callable[[Script], ScriptedServer], monkeypatch: pytest.MonkeyPatch, reply: bytes
) -> None:
    """What Windows has: no sendmsg, no select.poll (select() takes any socket there)."""
    connect = socket.create_connection
    monkeypatch.setattr(socket, "create_connection",
                        lambda *args, **kwargs: PortableSocket(connect(*args, **kwargs)))
    monkeypatch.delattr(select, "poll")
    server = scripted(lambda request: (reply, False))
    transport = PooledHTTPTransport()
    responses = [send_sync(server.url, transport) for _ in range(3)]
    transport.close()
    assert [r.status_code for r in responses] == [201 if reply is KEEP else 200] * 3
    assert len({r.content for r in responses}) == 1 and server.connections == 1


def test_async_transport_without_poll(
    scripted: Callable[[Script], ScriptedServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The idle-connection check falls back to select() where there is no poll() (Windows)."""
    monkeypatch.delattr(select, "poll")
    server = scripted(lambda request: (KEEP, True))  # closes every connection after its reply
    transport = PooledAsyncHTTPTransport()

    async def two() -> list[bytes]:
        first = await send_async(server.url, transport)
        await anyio.sleep(0.1)  # the close reaches the client: the idle check must see it
        second = await send_async(server.url, transport)
        await transport.aclose()
        return [first.content, second.content]

    assert anyio.run(two) == [b"kept", b"kept"]
    assert server.connections == 2
