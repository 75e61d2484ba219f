"""The sync and the async client are one API: the same public methods with the same signatures
(names, kinds, defaults, annotations), each async one a coroutine function (qdrant-client's
congruence check). A method added to one client and not the other fails here."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from service.client import AsyncEmbeddingClient, EmbeddingClient

# What only one side has, by design: the context-manager protocol of each, and httpx's name for
# closing (aclose) beside close on the async side.
ONLY_SYNC = {"__enter__", "__exit__"}
ONLY_ASYNC = {"__aenter__", "__aexit__", "aclose"}


def public_methods(cls: type) -> dict[str, Callable[..., Any]]:
    return {name: member for name, member in vars(cls).items()
            if callable(member) and (not name.startswith("_") or name in ONLY_SYNC | ONLY_ASYNC)}


def described(function: Callable[..., Any]) -> tuple[object, ...]:
    """A signature as comparable data; the transport's type differs by design (sync or async
    httpx transport) and is compared with that difference taken out."""
    signature = inspect.signature(function)
    parameters = [(p.name, p.kind, p.default,
                   str(p.annotation).replace("AsyncBaseTransport", "BaseTransport"))
                  for p in signature.parameters.values()]
    returns = str(signature.return_annotation).replace("AsyncEmbeddingClient", "EmbeddingClient")
    return tuple(parameters), returns


def test_same_public_methods() -> None:
    sync, async_ = public_methods(EmbeddingClient), public_methods(AsyncEmbeddingClient)
    assert set(sync) - ONLY_SYNC == set(async_) - ONLY_ASYNC
    assert set(sync) >= ONLY_SYNC and set(async_) >= ONLY_ASYNC
    assert len(set(sync) - ONLY_SYNC) == 17  # the sixteen calls and close


def test_same_signatures() -> None:
    sync, async_ = public_methods(EmbeddingClient), public_methods(AsyncEmbeddingClient)
    for name in sorted(set(sync) - ONLY_SYNC):
        assert described(sync[name]) == described(async_[name]), name
    assert described(EmbeddingClient.__init__) == described(AsyncEmbeddingClient.__init__)


def test_async_methods_are_coroutines_and_sync_ones_are_not() -> None:
    sync, async_ = public_methods(EmbeddingClient), public_methods(AsyncEmbeddingClient)
    for name in sorted(set(sync) - ONLY_SYNC):
        assert inspect.iscoroutinefunction(async_[name]), name
        assert not inspect.iscoroutinefunction(sync[name]), name


def test_the_check_sees_a_difference() -> None:
    class Sync:
        def lookup(self, table: str, ids: Any) -> None: ...

    class Async:
        async def lookup(self, table: str, ids: Any, extra: int = 0) -> None: ...

    assert described(Sync.lookup) != described(Async.lookup)
