"""Test transports: the ASGI app behind a sync client, an async client driven from sync tests,
and a transport that breaks replies on purpose (after the server has handled the request)."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Literal

import httpx
from anyio.from_thread import BlockingPortal

from service.client import AsyncEmbeddingClient


class PortalTransport(httpx.BaseTransport):
    """A sync transport running an async one (httpx.ASGITransport(app)) on a portal's loop."""

    def __init__(self, portal: BlockingPortal, inner: httpx.AsyncBaseTransport) -> None:
        self.portal = portal
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def send() -> httpx.Response:
            copy = httpx.Request(request.method, request.url, headers=request.headers,
                                 content=body, extensions=request.extensions)
            response = await self.inner.handle_async_request(copy)
            content = await response.aread()
            await response.aclose()
            return httpx.Response(response.status_code, headers=response.headers,
                                  content=content, extensions=response.extensions)

        return self.portal.call(send)

    def close(self) -> None:
        self.portal.call(self.inner.aclose)


class BlockingClient:
    """An AsyncEmbeddingClient whose coroutine methods are called from sync code through a
    portal, so one test suite drives both clients."""

    def __init__(self, portal: BlockingPortal, client: AsyncEmbeddingClient) -> None:
        self.portal = portal
        self.client = client

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
        if inspect.iscoroutinefunction(attribute):

            def call(*args: Any, **kwargs: Any) -> Any:
                return self.portal.call(functools.partial(attribute, *args, **kwargs))

            return call
        return attribute


Fault = Literal["drop", "503", "refuse", "500"]


class FaultyTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Forwards to `inner` (sync or async), but the first `times` requests whose path ends with
    `path_suffix` go wrong:

    - "drop": the request reaches the server, which handles it; its reply is then lost (as when
      the connection drops after the server sent it): httpx.RemoteProtocolError.
    - "503": the request reaches the server, then a 503 comes back instead of its reply (a proxy
      that gave up waiting).
    - "refuse": the request never reaches the server (connection refused).
    - "500": the request never reaches the server; a 500 comes back.

    `replies` holds (status, replayed) of every reply the server really sent to a matching
    request, in order.
    """

    def __init__(self, path_suffix: str, fault: Fault, times: int = 1) -> None:
        self.path_suffix = path_suffix
        self.fault = fault
        self.remaining = times
        self.inner: Any = None
        self.replies: list[tuple[int, bool]] = []

    def _faulty(self, request: httpx.Request) -> bool:
        if not request.url.path.endswith(self.path_suffix):
            return False
        if self.remaining > 0:
            self.remaining -= 1
            return True
        return False

    def _record(self, response: httpx.Response) -> None:
        self.replies.append(
            (response.status_code, response.headers.get("idempotent-replayed") == "true")
        )

    def _before(self, request: httpx.Request) -> httpx.Response | None:
        if self.fault == "refuse":
            raise httpx.ConnectError("connection refused (injected)", request=request)
        if self.fault == "500":
            return httpx.Response(500, json={"detail": "injected"}, request=request)
        return None

    def _after(self, request: httpx.Request) -> httpx.Response:
        if self.fault == "drop":
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response (injected)", request=request
            )
        return httpx.Response(503, json={"detail": "upstream timed out (injected)"},
                              headers={"Retry-After": "0"}, request=request)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        faulty = self._faulty(request)
        if faulty and (early := self._before(request)) is not None:
            return early
        response = self.inner.handle_request(request)
        if request.url.path.endswith(self.path_suffix):
            response.read()
            self._record(response)
        return self._after(request) if faulty else response

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        faulty = self._faulty(request)
        if faulty and (early := self._before(request)) is not None:
            return early
        response = await self.inner.handle_async_request(request)
        if request.url.path.endswith(self.path_suffix):
            await response.aread()
            self._record(response)
        return self._after(request) if faulty else response

    def close(self) -> None:
        self.inner.close()

    async def aclose(self) -> None:
        await self.inner.aclose()
