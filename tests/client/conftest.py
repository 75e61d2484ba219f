"""One client suite, four ways: the sync and the async client, each against the app in-process
(ASGI) and a real uvicorn process. Tests take `make_client` and call the methods synchronously;
the async client is driven through a blocking portal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from anyio.from_thread import start_blocking_portal
from fastapi import FastAPI

from service.client import AsyncEmbeddingClient, EmbeddingClient
from service.client._async_transport import PooledAsyncHTTPTransport
from service.client._transport import PooledHTTPTransport
from tests.client.transports import BlockingClient, FaultyTransport, PortalTransport
from tests.conftest import LiveServer

ClientFactory = Callable[..., Any]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def live_servers() -> Iterator[Callable[[dict[str, Any]], LiveServer]]:
    """Factory: a uvicorn process with the given settings (EMBED_* variables), started once per
    distinct settings for the whole session."""
    servers: dict[tuple[tuple[str, str], ...], LiveServer] = {}

    def get(settings: dict[str, Any]) -> LiveServer:
        env = tuple(sorted((f"EMBED_{name.upper()}", str(value))
                           for name, value in settings.items()))
        if env not in servers:
            servers[env] = LiveServer(env=dict(env)).start()
        return servers[env]

    yield get
    for server in servers.values():
        server.stop()


@pytest.fixture(params=["sync", "async"])
def client_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["asgi", "uvicorn"])
def server_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_client(
    client_kind: str, server_kind: str, make_app: Callable[..., FastAPI],
    request: pytest.FixtureRequest,
) -> Iterator[ClientFactory]:
    """Factory: make_client(settings={...}, fault=FaultyTransport(...), **client_arguments).
    Clients made in one test with the same settings talk to the same service. Retries back off
    1 ms (not 100 ms) unless told otherwise."""
    sync = client_kind == "sync"
    with ExitStack() as stack:
        portal = stack.enter_context(start_blocking_portal())
        apps: dict[tuple[tuple[str, Any], ...], FastAPI] = {}

        def service(settings: dict[str, Any]) -> tuple[str, Any]:
            """Base URL and transport (None: the client's default) of the service."""
            if server_kind == "uvicorn":
                servers = request.getfixturevalue("live_servers")
                server = servers(settings) if settings else request.getfixturevalue("live_server")
                return server.url, None
            key = tuple(sorted(settings.items()))
            if key not in apps:
                app = apps[key] = make_app(**settings)
                stack.enter_context(portal.wrap_async_context_manager(
                    app.router.lifespan_context(app)
                ))
            asgi = httpx.ASGITransport(app=apps[key])
            return "http://testserver", PortalTransport(portal, asgi) if sync else asgi

        def build(
            *, settings: dict[str, Any] | None = None, fault: FaultyTransport | None = None,
            **arguments: Any,
        ) -> Any:
            arguments.setdefault("backoff", 0.001)
            url, transport = service(settings or {})
            if fault is not None:
                fault.inner = transport or (
                    PooledHTTPTransport() if sync else PooledAsyncHTTPTransport()
                )
                transport = fault
            if sync:
                client = EmbeddingClient(url, transport=transport, **arguments)
                stack.callback(client.close)
                return client
            async_client = AsyncEmbeddingClient(url, transport=transport, **arguments)
            stack.callback(portal.call, async_client.close)
            return BlockingClient(portal, async_client)

        yield build


@pytest.fixture
def client(make_client: ClientFactory) -> Any:
    """A client (sync, or async through a portal) with the default settings."""
    return make_client()
