"""EmbeddingClient: the service from a synchronous trainer, numpy arrays in and out.

    with EmbeddingClient("http://127.0.0.1:8000") as client:
        client.create_table("words", num_embeddings=10_000, embedding_dim=64)
        vectors = client.lookup("words", ids)            # (len(ids), 64) float32
        client.push_gradients("words", ids, grads)
        client.apply("words", lr=0.1)
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx
import numpy as np

from service.client._routing import Router, ShardMap
from service.client._transport import PooledHTTPTransport
from service.client._wire import (
    RETRY_ERRORS,
    AnyResponse,
    Call,
    RequestFactory,
    Requests,
    RetryPolicy,
    WireFormat,
    finish,
    unavailable,
)
from service.client.errors import EmbeddingClientError
from service.client.models import (
    ApplyResult,
    KeyedWeights,
    Lookup,
    Neighbours,
    PushResult,
    TableInfo,
)

T = TypeVar("T")


class EmbeddingClient:
    """A connection pool to one service. Thread-safe; reuse one per process.

    Args:
        base_url: the service, e.g. "http://127.0.0.1:8000".
        token: sent as `Authorization: Bearer <token>` when given.
        connect_timeout / read_timeout: seconds to open a connection / to wait for a reply.
        retries: attempts after the first on connection errors, timeouts, 429, 502, 503, 504,
            with exponential backoff (backoff * 2**n seconds, jittered, at most max_backoff).
            Writes carry an Idempotency-Key, so a retried push or apply counts once.
        wire: "binary" (.npy / .npz bodies, the fast default) or "json".
        max_connections: idle connections kept open to the service between calls.
        transport: an httpx transport to send through instead of the default one (a lean
            connection pool; requests written by h11, replies parsed by httptools):
            httpx.HTTPTransport(...) for proxies or HTTP/2, or an ASGI transport in tests.
        route_to_shards: against a cluster-mode service, send lookups and pushes of binary
            wire straight to the shards that hold their ids (service.client._routing), the
            rest through the service's front; False sends everything to the front. Only with
            the default transport.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        token: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        retries: int = 2,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        wire: WireFormat = "binary",
        max_connections: int = 16,
        transport: httpx.BaseTransport | None = None,
        route_to_shards: bool = True,
    ) -> None:
        self._factory = RequestFactory(base_url, token, connect_timeout, read_timeout)
        self.base_url = self._factory.base_url
        self.retry = RetryPolicy(retries, backoff, max_backoff)
        self._requests = Requests(wire)
        self._transport = transport or PooledHTTPTransport(max_idle=max_connections)
        self._router = Router(token, connect_timeout, read_timeout,
                              route_to_shards and transport is None and wire == "binary")

    # -- tables ----------------------------------------------------------------------------
    def create_table(
        self,
        name: str,
        num_embeddings: int | None = None,
        embedding_dim: int | None = None,
        *,
        dtype: str = "float32",
        init: str | Mapping[str, Any] | None = None,
        seed: int | None = None,
        optimizer: str | Mapping[str, Any] | None = None,
        max_staleness: int | None = None,
        dynamic: Mapping[str, Any] | None = None,
        shards: int | None = None,
    ) -> TableInfo:
        """Create a table of num_embeddings rows (ids 0..num_embeddings-1), or with `dynamic`
        settings ({"capacity": 1_000_000, "admit_after": 2, "evict": "lfu", "ttl_steps": None},
        {} for the defaults) and no num_embeddings a dynamic table: any int64 / uint64 id, a
        row made on first use. `optimizer` is a kind ("adam") or {"kind": "adam", "lr": 0.01,
        ...}; `init` likewise ("zeros", {"kind": "normal", "std": 0.1}). TableExistsError if
        taken. `shards`: a cluster-mode service's shard servers for it (default its
        EMBED_SHARDS)."""
        return self._send(self._requests.create_table(
            name, num_embeddings, embedding_dim, dtype=dtype, init=init, seed=seed,
            optimizer=optimizer, max_staleness=max_staleness, dynamic=dynamic,
            shards=shards,
        ))

    def get_table(self, name: str) -> TableInfo:
        return self._send(self._requests.get_table(name))

    def list_tables(self) -> list[TableInfo]:
        return self._send(self._requests.list_tables())

    def delete_table(self, name: str) -> None:
        self._send(self._requests.delete_table(name))

    # -- the embedding layer ---------------------------------------------------------------
    def lookup(self, table: str, ids: Any) -> np.ndarray:
        """W[ids]: shape ids.shape + (embedding_dim,), the table's dtype (float64 over JSON).
        Binary replies are read-only views of the reply; `.copy()` one to write into it."""
        return self.lookup_with_step(table, ids).vectors

    def lookup_with_step(self, table: str, ids: Any) -> Lookup:
        """(W[ids], step): the rows and the table step they were read at, to pass back as
        push_gradients(..., step=step) when the table checks staleness."""
        call = self._requests.lookup(table, ids)
        shard_map = self._router.map_of(table)
        if shard_map is not None:
            planned = self._router.lookup_calls(shard_map, ids)
            if planned is not None:
                where, id_array, calls = planned
                found = self._router.lookup_result(shard_map, where, id_array, calls,
                                                   self._send_parts(calls))
                if found is not None:
                    return found
        return self._send(call, table)

    def push_gradients(
        self, table: str, ids: Any, grads: Any, apply: bool = False, step: int | None = None
    ) -> PushResult:
        """Add grads (ids.shape + (embedding_dim,)) into the pending gradient of rows ids;
        duplicate ids sum. apply=True updates the rows at once instead. `step` is the step the
        gradient was computed at (StaleGradientError if too old for max_staleness)."""
        call = self._requests.push_gradients(table, ids, grads, apply=apply, step=step)
        shard_map = self._router.map_of(table)
        if shard_map is not None:
            calls = self._router.push_calls(shard_map, call, ids, grads,
                                            apply or step is not None)
            if calls is not None:
                pushed = self._router.push_result(shard_map, calls, self._send_parts(calls))
                if pushed is not None:
                    return pushed
        return self._send(call, table)

    def apply(self, table: str, lr: float | None = None, average: bool = False) -> ApplyResult:
        """One optimizer step over every row with a pending gradient. `lr` overrides the
        optimizer's for this step; average=True divides by the number of pushes."""
        call = self._requests.apply(table, lr=lr, average=average)
        shard_map = self._router.map_of(table)
        if shard_map is not None:
            calls = self._router.leader_call(shard_map, call)
            applied = self._router.apply_result(shard_map, calls, self._send_parts(calls))
            if applied is not None:
                return applied
        return self._send(call, table)

    # -- exploring ---------------------------------------------------------------------------
    def set_labels(
        self, table: str, labels: Sequence[str], ids: Any = None, merge: bool = False
    ) -> TableInfo:
        """Label rows: labels[i] names row ids[i] (without ids: rows 0, 1, 2...). The labels
        replace the table's, or with merge=True join them. A label names one row per table
        (InvalidRequestError on a duplicate; nothing changes)."""
        return self._send(self._requests.set_labels(table, labels, ids, merge))

    def get_labels(self, table: str, ids: Any = None) -> dict[int, str]:
        """{id: label} of `ids` that have a label (without ids: every labelled row)."""
        return self._send(self._requests.get_labels(table, ids))

    def most_similar(
        self, table: str, positive: Any = (), negative: Any = (), k: int = 10,
        metric: str = "cosine",
    ) -> Neighbours:
        """The k rows nearest to positive minus negative, as gensim's most_similar: each item
        an id, a label or a vector; metric "cosine", "dot" or "l2". The query's own rows are
        left out. `.items()` gives [(label or id, score)]:

            client.most_similar("words", positive=["king", "woman"], negative=["man"], k=5)
        """
        return self._send(self._requests.most_similar(table, positive, negative, k, metric))

    def most_similar_batch(
        self, table: str, queries: Sequence[Mapping[str, Any]], k: int = 10,
        metric: str = "cosine",
    ) -> list[Neighbours]:
        """most_similar for several queries ({"positive": [...], "negative": [...]}) in one
        call: one pass over the table for all of them."""
        return self._send(self._requests.most_similar_batch(table, queries, k, metric))

    # -- service ---------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._send(self._requests.health())

    def snapshot(self) -> dict[str, Any]:
        """Snapshot every changed table to the service's data directory now (POST
        /v1/snapshots). The server's reply: {"tables": [{"name", "step", "bytes", "seconds"}],
        "unchanged": [names], "bytes", "seconds"}."""
        return self._send(self._requests.snapshot())

    def export_weights(self, table: str) -> np.ndarray | KeyedWeights:
        """A fixed table's whole weight matrix, (num_embeddings, embedding_dim), read-only
        (.npy on the wire, whatever `wire` says); a dynamic table's live rows as KeyedWeights
        (ids ascending, weights), from an .npz."""
        return self._send(self._requests.export_weights(table))

    def import_weights(self, table: str, weights: Any, ids: Any = None) -> TableInfo:
        """A fixed table: replace its weights with an array of exactly its shape and dtype
        (.npy on the wire, whatever `wire` says). A dynamic table: with `ids`, set the rows of
        those ids (made where absent; .npz on the wire). The pending gradient is dropped; step
        and optimizer state are kept."""
        return self._send(self._requests.import_weights(table, weights, ids))

    # -- sending ---------------------------------------------------------------------------
    def _send_parts(self, calls: list[tuple[int, str, Call[Any]]]
                    ) -> list[AnyResponse | Exception]:
        """Each part (shard, its server, call) at once, not retried (a part that fails sends
        the whole request to the front)."""
        transport = self._transport
        assert isinstance(transport, PooledHTTPTransport)
        prepared = [self._router.factory(url).prepare(call) for _, url, call in calls]
        return transport.send_all(prepared, self._router.timeouts)

    def _fetch_map(self, table: str) -> None:
        """The table's map of shards, from the front (none: the front serves it)."""
        try:
            shard_map = ShardMap.from_json(self._send(self._requests.shard_map(table)))
        except EmbeddingClientError:
            shard_map = None
        self._router.keep(table, shard_map)

    def _send(self, call: Call[T], table: str | None = None) -> T:
        # Built once: its Idempotency-Key is the same on retries. The default transport takes
        # the request prepared (no httpx.Request to build); any other gets an httpx.Request.
        own = self._transport if isinstance(self._transport, PooledHTTPTransport) else None
        if own is not None:
            prepared = self._factory.prepare(call)
        else:
            request = self._factory.build(call)
        attempt = 0
        response: AnyResponse
        while True:
            try:
                if own is not None:
                    response = own.send(prepared, self._factory.timeouts)
                else:
                    response = self._transport.handle_request(request)
                    try:
                        response.read()
                    finally:
                        response.close()
            except RETRY_ERRORS as error:
                if attempt >= self.retry.retries:
                    raise unavailable(call, error, attempt + 1) from error
                time.sleep(self.retry.delay(attempt))
                attempt += 1
                continue
            except httpx.TransportError as error:
                raise unavailable(call, error, attempt + 1) from error
            if self.retry.should_retry_status(response, attempt):
                time.sleep(self.retry.delay(attempt, response.headers.get("retry-after")))
                attempt += 1
                continue
            if table is not None and self._router.wants_map(table, response):
                self._fetch_map(table)
            return finish(call, response)

    def close(self) -> None:
        """Close the pooled connections."""
        self._transport.close()

    def __enter__(self) -> EmbeddingClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EmbeddingClient({self.base_url!r})"
