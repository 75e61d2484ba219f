"""A real dropped connection: a loopback TCP proxy in front of the live uvicorn forwards a push,
lets the service answer, and closes the client's connection instead of passing the answer on.
The client retries with the same Idempotency-Key; the service replays; the push counts once."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from service.client import AsyncEmbeddingClient, EmbeddingClient
from tests.conftest import LiveServer


def read_message(sock: socket.socket) -> bytes | None:
    """One HTTP/1.1 message (head and Content-Length body), or None at end of stream."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head + b"\r\n\r\n" + body


class DroppingProxy:
    """Forwards every request to 127.0.0.1:upstream_port, one upstream connection per client
    connection. The first `drops` requests whose request line contains `path_part` are
    forwarded and answered upstream, then the client's connection is closed without the answer.
    `replies` holds the first line and the Idempotent-Replayed header of every such reply."""

    def __init__(self, upstream_port: int, path_part: bytes, drops: int = 1) -> None:
        self.upstream_port = upstream_port
        self.path_part = path_part
        self.drops = drops
        self.replies: list[tuple[bytes, bool]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self.serve, args=(client,), daemon=True).start()

    def serve(self, client: socket.socket) -> None:
        with client, socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
            while (request := read_message(client)) is not None:
                upstream.sendall(request)
                reply = read_message(upstream)
                if reply is None:
                    return
                if self.path_part not in request.split(b"\r\n", 1)[0]:
                    client.sendall(reply)
                    continue
                with self.lock:
                    self.replies.append((reply.split(b"\r\n", 1)[0],
                                         b"\r\nidempotent-replayed: true" in reply.lower()))
                    drop = self.drops > 0
                    self.drops -= drop
                if drop:
                    return  # closes the client's connection, the answer unsent
                client.sendall(reply)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def proxy(live_server: LiveServer) -> Iterator[DroppingProxy]:
    proxy = DroppingProxy(live_server.port, b"/gradients")
    yield proxy
    proxy.close()


def test_sync_client_push_through_a_dropped_connection(
    proxy: DroppingProxy, table_name: str
) -> None:
    with EmbeddingClient(proxy.url, backoff=0.001) as client:
        client.create_table(table_name, 3, 2, init="zeros", optimizer={"kind": "sgd", "lr": 1.0})
        result = client.push_gradients(table_name, [1], [[1.0, 3.0]], apply=True)
        assert proxy.replies == [(b"HTTP/1.1 200 OK", False), (b"HTTP/1.1 200 OK", True)]
        assert (result.step, result.replayed) == (1, True)
        assert client.get_table(table_name).step == 1
        assert np.array_equal(client.lookup(table_name, [1]), np.array([[-1.0, -3.0]], np.float32))


@pytest.mark.anyio
async def test_async_client_push_through_a_dropped_connection(
    proxy: DroppingProxy, table_name: str
) -> None:
    async with AsyncEmbeddingClient(proxy.url, backoff=0.001) as client:
        await client.create_table(table_name, 3, 2, init="zeros",
                                  optimizer={"kind": "sgd", "lr": 1.0})
        result = await client.push_gradients(table_name, [1], [[1.0, 3.0]])
        assert proxy.replies == [(b"HTTP/1.1 200 OK", False), (b"HTTP/1.1 200 OK", True)]
        assert (result.pending_rows, result.replayed) == (1, True)
        assert (await client.apply(table_name)).rows_updated == 1
        vectors = await client.lookup(table_name, [1])
        assert np.array_equal(vectors, np.array([[-1.0, -3.0]], np.float32))
