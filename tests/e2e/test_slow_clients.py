"""Slow and vanishing clients against a real uvicorn process started as in production
(python -m service.api): a request's head and body have deadlines, connections are bounded
(503 beyond), and a client that disconnects mid-upload is a 499, not a server error."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import LiveServer

pytestmark = pytest.mark.e2e

LIMITS = {
    "EMBED_MAX_CONNECTIONS": "8",
    "EMBED_REQUEST_HEAD_TIMEOUT_SECONDS": "1",
    "EMBED_REQUEST_BODY_TIMEOUT_SECONDS": "1",
    "EMBED_REQUEST_BODY_MIN_BYTES_PER_SECOND": "1000",
}


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    server = LiveServer(env=LIMITS).start()
    yield server
    server.stop()


def connect(server: LiveServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=30)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (30 s at most)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return received + b"<still open after 30 s>"
    except ConnectionResetError:
        pass
    return received


def trickle(sock: socket.socket, data: bytes, stop: threading.Event) -> None:
    """Send one byte every 0.2 s (a slow client that is never idle long) until told or cut."""
    for byte in data:
        if stop.wait(0.2):
            return
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return


HEAD = b"POST /v1/tables/t/gradients HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def test_slow_heads_and_bodies_are_cut_off_and_connections_are_bounded(
    server: LiveServer,
) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        client.post("/v1/tables", json={"name": "t", "num_embeddings": 4,
                                        "embedding_dim": 2}).raise_for_status()
    stop = threading.Event()
    silent = [connect(server) for _ in range(2)]  # connect and say nothing
    slow_head = [connect(server) for _ in range(3)]  # a head at a byte every 0.2 s
    slow_body = [connect(server) for _ in range(3)]  # a whole head, then a body as slow
    for sock in slow_head:
        threading.Thread(target=trickle, args=(sock, HEAD * 10, stop), daemon=True).start()
    for sock in slow_body:
        sock.sendall(HEAD + b"Content-Length: 1000\r\n\r\n{")
        threading.Thread(target=trickle, args=(sock, b"0" * 999, stop), daemon=True).start()
    try:
        time.sleep(0.3)  # all eight are open and counted
        with connect(server) as ninth:  # one connection over max_connections=8
            ninth.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            refused = read_until_closed(ninth)
        assert refused.startswith(b"HTTP/1.1 503 "), refused
        assert b"max_connections=8" in refused
        assert b"x-error-code: too_many_connections\r\n" in refused

        cut = {name: [read_until_closed(sock) for sock in socks]
               for name, socks in (("silent", silent), ("head", slow_head), ("body", slow_body))}
    finally:
        stop.set()
        for sock in silent + slow_head + slow_body:
            sock.close()
    for replies in cut.values():
        for reply in replies:
            assert reply.startswith(b"HTTP/1.1 408 "), reply
            assert b"x-error-code: request_timeout\r\n" in reply
    assert b"request head not complete within request_head_timeout_seconds=1" in cut["head"][0]
    assert b"request head not complete" in cut["silent"][0]
    assert b"request body arrived slower than" in cut["body"][0]
    # every slot is free again: ordinary requests are served
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/healthz").status_code == 200
        metrics = client.get("/metrics").text
    assert 'embed_http_connections_closed_total{reason="head_timeout"} 5.0' in metrics
    assert 'embed_http_connections_closed_total{reason="too_many_connections"} 1.0' in metrics
    assert 'embed_http_connections_closed_total{reason="body_timeout"} 3.0' in metrics
    # the three requests whose bodies never came: logged and counted as 408, not 500
    assert ('embed_http_requests_total{method="POST",route="/v1/tables/{name}/gradients",'
            'status="408"} 3.0') in metrics


def test_a_fast_large_body_is_not_cut_off(server: LiveServer) -> None:
    """A body that keeps arriving faster than the minimum rate may take longer than the body
    timeout: 2 MB sent in 20 pieces over about 2 s (a 1 s timeout, 1,000 bytes/s minimum)."""
    with connect(server) as sock:
        body = b'{"name": "slow-but-steady", "num_embeddings": 1, "embedding_dim": 1}'
        body = body.ljust(2_000_000)
        sock.sendall(b"POST /v1/tables HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        for start in range(0, len(body), 100_000):
            sock.sendall(body[start : start + 100_000])
            time.sleep(0.1)
        assert read_until_closed(sock).startswith(b"HTTP/1.1 201 ")


def test_a_client_gone_mid_upload_is_a_499_not_a_server_error(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        client.post("/v1/tables", json={"name": "gone", "num_embeddings": 4,
                                        "embedding_dim": 2}).raise_for_status()
        with connect(server) as sock:
            sock.sendall(b"POST /v1/tables/gone/gradients HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"ids\"")
            time.sleep(0.3)  # the request has started and waits for the rest of its body
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            metrics = client.get("/metrics").text
            if 'route="/v1/tables/{name}/gradients",status="499"' in metrics:
                break
            time.sleep(0.05)
    assert ('embed_http_requests_total{method="POST",route="/v1/tables/{name}/gradients",'
            'status="499"} 1.0') in metrics
    assert 'status="500"' not in metrics
    assert "Exception in ASGI application" not in server.output()
