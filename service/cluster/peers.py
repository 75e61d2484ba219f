"""A shard server's calls to the other shards of its table, over their HTTP (the leader's side).

The leader (service.cluster.leader) runs each step of a table as two rounds of small requests to
every other shard's server (/internal/v1/tables/{name}/<operation>): the same connection-pooled
HTTP/1.1 the SDK uses (service.client's transport, h11), about a third of a Ray actor call's
round trip here (the README's cluster section has the figures). A shard that cannot be reached
or answers 5xx is `Unreachable`; a refusal (4xx) comes back as the service error it names.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
import orjson

from service.api.codecs import NPY
from service.client._async_transport import PooledAsyncHTTPTransport
from service.client._wire import AnyResponse, Call, RequestFactory
from service.core.errors import (
    EmbeddingServiceError,
    InvalidRequest,
    ShardMapChanged,
    StaleGradient,
)

INTERNAL = "/internal/v1/tables"
SHARD_HEADER = "X-Shard"  # "<generation>/<shard>": which shard of which table the sender means


class Unreachable(Exception):
    """A shard's server did not answer (down, restarting, moved), or answered 5xx."""

    def __init__(self, shard: int, why: str) -> None:
        super().__init__(f"shard {shard}: {why}")
        self.shard = shard


def _identity(response: AnyResponse) -> AnyResponse:
    return response


REFUSALS: dict[str, type[EmbeddingServiceError]] = {
    "invalid_request": InvalidRequest, "stale_gradient": StaleGradient,
    "shard_map_changed": ShardMapChanged,
}


class Peers:
    """Links to a table's other shards: their URLs by shard (None: unknown, being restarted)."""

    def __init__(self, table: str, generation: str, token: str | None,
                 urls: list[str | None],
                 addresses: Callable[[], Awaitable[list[str | None]]] | None = None) -> None:
        self.table = table
        self.generation = generation
        self.token = token
        self.urls = urls
        self.addresses = addresses  # asks the catalog where the shards are now
        self.transport = PooledAsyncHTTPTransport(max_idle=8)
        self._factories: dict[str, RequestFactory] = {}

    def _factory(self, url: str) -> RequestFactory:
        factory = self._factories.get(url)
        if factory is None:
            factory = self._factories[url] = RequestFactory(url, self.token, 2.0, 60.0)
        return factory

    async def call(
        self, shard: int, operation: str, *, fields: Mapping[str, Any] | None = None,
        body: bytes | None = None, query: Mapping[str, str] | None = None,
        public: bool = False, headers: Mapping[str, str] | None = None,
    ) -> Any:
        """POST one operation to `shard`; its JSON reply. `public`: the table's public route
        (/v1/tables/{name}/<operation>, a part of a push) rather than an internal one."""
        url = self.urls[shard]
        if url is None:
            raise Unreachable(shard, "its server is not up yet")
        base = "/v1/tables" if public else INTERNAL
        content_type = NPY if body is not None else "application/json"
        content = body if body is not None else orjson.dumps(dict(fields or {}))
        call = Call("POST", f"{base}/{self.table}/{operation}", _identity, content,
                    {"Content-Type": content_type, "Accept": "application/json",
                     SHARD_HEADER: f"{self.generation}/{shard}", **(headers or {})},
                    dict(query) if query else None)
        factory = self._factory(url)
        try:
            response = await self.transport.send(factory.prepare(call), factory.timeouts)
        except httpx.TransportError as error:
            raise Unreachable(shard, f"{type(error).__name__}: {error}") from None
        if response.status_code >= 500:
            raise Unreachable(shard, f"HTTP {response.status_code}")
        reply = orjson.loads(response.content) if response.content else {}
        if response.status_code >= 400:
            code = response.headers.get("x-error-code", "")
            refusal = REFUSALS.get(code, InvalidRequest)
            raise refusal(str(reply.get("detail", response.reason_phrase)))
        return reply

    async def each(self, shards: list[int], operation: str,
                   **kwargs: Any) -> list[Any | BaseException]:
        """call() on every shard of `shards` at once; each reply or its exception."""
        return list(await asyncio.gather(*(self.call(shard, operation, **kwargs)
                                           for shard in shards), return_exceptions=True))

    async def refresh(self) -> bool:
        """The shards' addresses asked again; whether any changed."""
        if self.addresses is None:
            return False
        try:
            urls = await self.addresses()
        except Exception:  # noqa: BLE001 - the catalog restarting: keep what we have
            return False
        changed, self.urls = urls != self.urls, list(urls)
        return changed

    async def close(self) -> None:
        await self.transport.aclose()
