"""The client's transports (requests by h11, replies by httptools; sync over blocking sockets,
async over non-blocking ones on asyncio and trio) against a scripted loopback server: chunked
bodies, bodies up to the end of the connection, long bodies received in place (in one piece or
many), Connection: close in any spelling, HTTP/1.0 replies, 1xx, bytes past a reply, replies cut
short, HEAD, kept-alive connections the server has closed meanwhile, timeouts, 1,100 open files,
and sockets with only what Windows has."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from service.client import AsyncEmbeddingClient, EmbeddingClient, ServerUnavailableError
from service.client import _async_transport as async_transport_module
from service.client._async_transport import PooledAsyncHTTPTransport
from service.client._transport import PooledHTTPTransport

# (request bytes) -> (reply bytes, close the connection after it); a reply given as a list of
# pieces is sent a piece at a time, with a pause between them (a body arriving over many reads)
Script = Callable[[bytes], tuple[bytes | list[bytes], bool]]


class ScriptedServer:
    """Answers each request on 127.0.0.1 with what `script` says; counts connections."""

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.listener.getsockname()[1]}"
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
        with contextlib.suppress(OSError):  # the client may hang up first
            if self.tls:
                connection = self.tls.wrap_socket(connection, server_side=True)
        with connection, contextlib.suppress(OSError):
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
                for number, piece in enumerate([reply] if isinstance(reply, bytes) else reply):
                    if number:
                        time.sleep(0.005)
                    connection.sendall(piece)
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


def send_sync(
    url: str, transport: PooledHTTPTransport, read: float = 5.0, method: str = "GET"
) -> httpx.Response:
    timeouts = {"connect": 5, "read": read}
    request = httpx.Request(method, url + "/x", extensions={"timeout": timeouts})
    response = transport.handle_request(request)
    response.read()
    return response


async def send_async(
    url: str, transport: PooledAsyncHTTPTransport, read: float = 5.0, method: str = "GET"
) -> httpx.Response:
    timeouts = {"connect": 5, "read": read}
    request = httpx.Request(method, url + "/x", extensions={"timeout": timeouts})
    response = await transport.handle_async_request(request)
    await response.aread()
    return response


SIDES = ["sync", "asyncio", "trio"]  # the sync transport; the async one on each anyio backend


def send_twice(url: str, side: str, method: str = "GET") -> list[httpx.Response]:
    """Two requests, one after the other, through one transport of the given side."""
    if side == "sync":
        sync_transport = PooledHTTPTransport()
        responses = [send_sync(url, sync_transport, method=method) for _ in range(2)]
        sync_transport.close()
        return responses
    async_transport = PooledAsyncHTTPTransport()

    async def two() -> list[httpx.Response]:
        responses = [await send_async(url, async_transport, method=method) for _ in range(2)]
        await async_transport.aclose()
        return responses

    return anyio.run(two, backend=side)


def pieces(reply: bytes, count: int) -> list[bytes]:
    """The reply cut into `count` pieces, sent one by one."""
    size = -(-len(reply) // count)
    return [reply[start : start + size] for start in range(0, len(reply), size)]


CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kind: chunked\r\n\r\n"
           b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: t\r\n\r\n")
TO_THE_END = b"HTTP/1.1 200 OK\r\nX-Kind: eof\r\n\r\nuntil the end"
CLOSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
CLOSE_AMONG_OTHERS = (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: Keep-Alive, CLOSE\r\n"
                      b"\r\nok")
HTTP_1_0 = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"  # 1.0: closed after the reply
HTTP_1_0_KEEP = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
PAST_THE_END = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"  # junk after
JUNK_PAST_THE_END = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokSSH-2.0-OpenSSH\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nkept"
KEEP = b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\nkept"
NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"
HEALTHY = b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}"
BIG_BODY = bytes(range(256)) * 3906 + bytes(64)  # 1,000,000 bytes: many reads, many pieces
BIG = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + BIG_BODY
BIG_CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                          for part in pieces(BIG_BODY, 7)) + b"0\r\n\r\n")
BIG_TO_THE_END = b"HTTP/1.1 200 OK\r\n\r\n" + BIG_BODY
BIG_PAST_THE_END = BIG + b"HTTP/1.1 200 OK\r\n"  # left in the socket: the idle check sees it


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(
    ("reply", "close", "content"),
    [(CHUNKED, False, b"hello, world"), (TO_THE_END, True, b"until the end"),
     (CLOSE, True, b"ok"), (CLOSE_AMONG_OTHERS, True, b"ok"), (HTTP_1_0, True, b"ok"),
     (HTTP_1_0_KEEP, True, b"ok"), (PAST_THE_END, True, b"ok"), (JUNK_PAST_THE_END, True, b"ok"),
     (CONTINUE, False, b"kept"), (KEEP, False, b"kept"), (NO_CONTENT, False, b""),
     (BIG, False, BIG_BODY), (pieces(BIG, 9), False, BIG_BODY),
     (pieces(CONTINUE[:25] + BIG, 5), False, BIG_BODY), (BIG_CHUNKED, False, BIG_BODY),
     (pieces(BIG_CHUNKED, 4), False, BIG_BODY), (pieces(BIG_TO_THE_END, 6), True, BIG_BODY),
     (BIG_PAST_THE_END, True, BIG_BODY)],
    ids=["chunked", "to-the-end", "close", "close-among-others", "http-1.0",
         "http-1.0-keep-alive", "bytes-past-the-reply", "junk-past-the-reply", "100-continue",
         "keep", "204", "big", "big-in-pieces", "big-after-100-continue", "big-chunked",
         "big-chunked-in-pieces", "big-to-the-end", "big-then-bytes-past"],
)
def test_reply_framings(
    scripted: Callable[[Script], ScriptedServer], side: str, reply: bytes | list[bytes],
    close: bool, content: bytes,
) -> None:
    server = scripted(lambda request: (reply, close))
    responses = send_twice(server.url, side)
    assert [r.content for r in responses] == [content, content]
    assert responses[0].status_code == (201 if reply is KEEP else 204 if reply is NO_CONTENT
                                        else 200)
    assert server.connections == (2 if close else 1)  # kept alive unless the reply says not


@pytest.mark.parametrize("side", SIDES)
def test_head_reply_ends_with_its_head(
    scripted: Callable[[Script], ScriptedServer], side: str
) -> None:
    """A HEAD's reply says how long the body would be and sends none (llhttp cannot be told
    it answers a HEAD: h11 judges it); the connection is not used again."""
    server = scripted(lambda request: (b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n", False))
    responses = send_twice(server.url, side, method="HEAD")
    assert [(r.status_code, r.content, r.headers["content-length"]) for r in responses] == [
        (200, b"", "5000")] * 2
    assert server.connections == 2


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(
    "reply", [BIG[:500_000], BIG_CHUNKED[:500_000], HEALTHY[:30], b""],
    ids=["sized-body", "chunked-body", "head", "nothing"],
)
def test_reply_cut_short(
    scripted: Callable[[Script], ScriptedServer], side: str, reply: bytes
) -> None:
    """The server closes before the reply's end: an error (the client retries it), never a
    short body."""
    server = scripted(lambda request: (reply, True))
    with pytest.raises(httpx.RemoteProtocolError, match="closed (the )?connection"):
        send_twice(server.url, side)


@pytest.mark.parametrize("side", SIDES)
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

        first, second = anyio.run(send_two, backend=side)
    assert (first.content, second.content, server.connections) == (b"kept", b"kept", 2)


@pytest.mark.parametrize("side", SIDES)
def test_read_timeout(scripted: Callable[[Script], ScriptedServer], side: str) -> None:
    server = scripted(lambda request: (b"", False))  # never answers
    if side == "sync":
        with pytest.raises(httpx.ReadTimeout):
            send_sync(server.url, PooledHTTPTransport(), read=0.2)
    else:
        with pytest.raises(httpx.ReadTimeout):
            anyio.run(lambda: send_async(server.url, PooledAsyncHTTPTransport(), read=0.2),
                      backend=side)


def test_async_connections_outlive_their_event_loop(
    scripted: Callable[[Script], ScriptedServer],
) -> None:
    """A kept-alive connection is a plain socket: an event loop started later (asyncio.run in
    a loop of a trainer's script) uses it again, on either backend."""
    server = scripted(lambda request: (KEEP, False))
    transport = PooledAsyncHTTPTransport()
    replies = [anyio.run(send_async, server.url, transport, backend=backend).content
               for backend in ("asyncio", "asyncio", "trio")]
    anyio.run(transport.aclose)
    assert (replies, server.connections) == ([b"kept"] * 3, 1)


def test_client_read_timeout_becomes_server_unavailable(
    scripted: Callable[[Script], ScriptedServer],
) -> None:
    server = scripted(lambda request: (b"", False))
    client = EmbeddingClient(server.url, read_timeout=0.1, retries=1, backoff=0.001)
    with client, pytest.raises(ServerUnavailableError) as caught:
        client.health()
    assert "ReadTimeout" in caught.value.detail and "after 2 attempt(s)" in caught.value.detail
    assert server.connections == 2  # a timed-out connection is not reused


@pytest.mark.parametrize("side", SIDES)
def test_garbage_reply(scripted: Callable[[Script], ScriptedServer], side: str) -> None:
    server = scripted(lambda request: (b"SSH-2.0-OpenSSH\r\n\r\n", True))
    with pytest.raises(httpx.RemoteProtocolError, match="malformed reply"):
        send_twice(server.url, side)


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


@pytest.mark.parametrize("side", SIDES)
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

        replies = anyio.run(five, backend=side)
    assert replies == [{"status": "ok"}] * 5
    assert server.connections == 1


class PortableSocket:
    """A socket with only what every platform's sockets have (Windows' have no sendmsg, and
    take SO_RCVTIMEO in another format): anything else is an AttributeError, as on Windows."""

    PORTABLE = frozenset({"sendall", "send", "recv", "recv_into", "settimeout", "gettimeout",
                          "setblocking", "fileno", "close", "shutdown", "getpeername",
                          "getsockname"})

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


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("reply", [KEEP, CHUNKED, BIG], ids=["sized", "chunked", "big"])
def test_async_transport_needs_only_portable_socket_calls(
    scripted: Callable[[Script], ScriptedServer], monkeypatch: pytest.MonkeyPatch, reply: bytes,
    backend: str,
) -> None:
    """The async transport's exchanges and idle checks on a socket with only what Windows has
    (its connections are opened with connect, setblocking and getsockopt, which Windows has)."""
    open_socket = async_transport_module.open_socket

    async def portable(host: str, port: int) -> Any:
        return PortableSocket(await open_socket(host, port))

    monkeypatch.setattr(async_transport_module, "open_socket", portable)
    monkeypatch.delattr(select, "poll")
    server = scripted(lambda request: (reply, False))
    transport = PooledAsyncHTTPTransport()

    async def three() -> list[httpx.Response]:
        responses = [await send_async(server.url, transport) for _ in range(3)]
        await transport.aclose()
        return responses

    responses = anyio.run(three, backend=backend)
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


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made by the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate (apt-get install "
                    "openssl)")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(folder / "key.pem"),
         "-out", str(folder / "cert.pem")],
        check=True, capture_output=True,
    )
    return folder / "cert.pem", folder / "key.pem"


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("reply", [KEEP, BIG, pieces(BIG_CHUNKED, 4)],
                         ids=["sized", "big", "big-chunked-in-pieces"])
def test_tls(
    certificate: tuple[Path, Path], side: str, reply: bytes | list[bytes],
) -> None:
    """https: the sync transport over a TLS socket, the async one over a non-blocking one
    (handshake, reads and writes that want the other way round)."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(*certificate)
    server = ScriptedServer(lambda request: (reply, False), tls=server_context)
    client_context = ssl.create_default_context(cafile=str(certificate[0]))
    try:
        if side == "sync":
            sync_transport = PooledHTTPTransport(ssl_context=client_context)
            responses = [send_sync(server.url, sync_transport) for _ in range(2)]
            sync_transport.close()
        else:
            async_transport = PooledAsyncHTTPTransport(ssl_context=client_context)

            async def two() -> list[httpx.Response]:
                responses = [await send_async(server.url, async_transport) for _ in range(2)]
                await async_transport.aclose()
                return responses

            responses = anyio.run(two, backend=side)
    finally:
        server.listener.close()
    expected = b"kept" if reply is KEEP else BIG_BODY
    assert [r.content for r in responses] == [expected] * 2 and server.connections == 1
