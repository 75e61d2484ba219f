"""Every endpoint as a `Call`: the request to send and how to read its reply. Shared by the sync
and the async client, which only differ in how they send (and sleep between retries).

A Call is built once per logical call, so its Idempotency-Key (on every call that changes
something) is the same on each retry, and the server answers a repeat with its first reply.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
import numpy as np

from service.client import _codecs as codecs
from service.client._http11 import Prepared, Response, origin_of
from service.client.errors import EmbeddingClientError, ServerUnavailableError, error_for
from service.client.models import (
    ApplyResult,
    KeyedWeights,
    Lookup,
    Neighbours,
    PushResult,
    TableInfo,
)

T = TypeVar("T")
# A reply: the client's own transports' Response, or any httpx transport's (the same fields)
AnyResponse = Response | httpx.Response
RESPONSE_TYPES = (Response, httpx.Response)  # isinstance(reply, RESPONSE_TYPES): a reply
WireFormat = Literal["binary", "json"]

RETRY_STATUSES = frozenset({429, 502, 503, 504})
# The request may not have reached the service, or its reply was lost: safe to send again
# (reads are idempotent, and every write carries an Idempotency-Key).
RETRY_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    method: str
    path: str
    decode: Callable[[AnyResponse], T]
    content: bytes | None = None
    headers: Mapping[str, str] | None = None
    params: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`retries` more attempts after the first; the n-th waits about backoff * 2**n seconds
    (half of it fixed, half random: "equal jitter"), at most max_backoff, or longer when a 429 /
    503 says Retry-After (honoured up to max_backoff)."""

    retries: int = 2
    backoff: float = 0.1
    max_backoff: float = 5.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        ceiling = min(self.max_backoff, self.backoff * 2.0**attempt)
        wait = ceiling / 2 + random.uniform(0, ceiling / 2)
        if retry_after:
            with contextlib.suppress(ValueError):  # an HTTP date: keep our own backoff
                wait = max(wait, min(float(retry_after), self.max_backoff))
        return wait

    def should_retry_status(self, response: AnyResponse, attempt: int) -> bool:
        return response.status_code in RETRY_STATUSES and attempt < self.retries


class RequestFactory:
    """Requests for Calls to one service: httpx.Requests for any httpx transport, and for the
    client's own transports the same request prepared without one (building an httpx.Request
    costs more than the rest of a small call). Built here rather than by httpx.Client, whose
    per-call URL and header merging costs more still: the URL of each (path, query) is parsed
    once, and the default headers and timeouts are fixed."""

    def __init__(
        self, base_url: str, token: str | None, connect_timeout: float, read_timeout: float
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.headers = {"User-Agent": "embedding-service-client", "Accept-Encoding": "identity"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.timeouts = {"connect": connect_timeout, "read": read_timeout,
                         "write": read_timeout, "pool": read_timeout}
        self._urls: dict[tuple[str, tuple[tuple[str, str], ...]], httpx.URL] = {}
        netloc = httpx.URL(self.base_url).netloc
        self._default_headers = ((b"Host", netloc), *(
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in self.headers.items()))

    def url(self, path: str, params: Mapping[str, str] | None) -> httpx.URL:
        key = (path, tuple(params.items()) if params else ())
        url = self._urls.get(key)
        if url is None:
            if len(self._urls) >= 1024:
                self._urls.clear()
            url = self._urls[key] = httpx.URL(self.base_url + path, params=params)
        return url

    def prepare(self, call: Call[Any]) -> Prepared:
        """The call as the client's own transports take it (what build's httpx.Request would
        send: the same headers, Content-Length as httpx sets it)."""
        url = self.url(call.path, call.params)
        headers = self._default_headers
        if call.headers:
            overridden = {name.lower() for name in call.headers}
            headers = (*(header for header in headers
                         if header[0].decode("latin-1").lower() not in overridden),
                       *((name.encode("latin-1"), value.encode("latin-1"))
                         for name, value in call.headers.items()))
        body = call.content or b""
        if body or call.method in ("POST", "PUT", "PATCH"):
            headers = (*headers, (b"Content-Length", str(len(body)).encode("ascii")))
        return Prepared(origin_of(url), call.method.encode("ascii"), url.raw_path, headers, body)

    def build(self, call: Call[Any]) -> httpx.Request:
        headers = {**self.headers, **call.headers} if call.headers else self.headers
        return httpx.Request(
            call.method, self.url(call.path, call.params), headers=headers,
            content=call.content, extensions={"timeout": self.timeouts},
        )


def unavailable(call: Call[Any], error: Exception, attempts: int) -> ServerUnavailableError:
    return ServerUnavailableError(
        f"{call.method} {call.path} got no reply after {attempts} attempt(s): "
        f"{type(error).__name__}: {error or 'connection lost'}"
    )


def finish(call: Call[T], response: AnyResponse) -> T:
    """The decoded reply, or the typed error for a failure reply."""
    if response.is_success:
        return call.decode(response)
    raise failure(response)


def failure(response: AnyResponse) -> EmbeddingClientError:
    detail = response.reason_phrase or "error"
    try:
        body = codecs.decode_json(response.content)
        if isinstance(body, dict) and "detail" in body:
            detail = body["detail"] if isinstance(body["detail"], str) else str(body["detail"])
    except ValueError:
        if response.content:
            detail = bytes(response.content[:200]).decode("utf-8", "replace")
    return error_for(response.status_code, detail, response.headers.get("x-error-code"))


def _replayed(response: AnyResponse) -> bool:
    return bool(response.headers.get("idempotent-replayed") == "true")


def _json(response: AnyResponse) -> Any:
    return codecs.decode_json(response.content)


def _nothing(response: AnyResponse) -> None:
    return None


def _table_info(response: AnyResponse) -> TableInfo:
    return TableInfo.from_json(_json(response))


def _table_list(response: AnyResponse) -> list[TableInfo]:
    return [TableInfo.from_json(table) for table in _json(response)["tables"]]


def _push_result(response: AnyResponse) -> PushResult:
    return PushResult.from_json(_json(response), _replayed(response))


def _apply_result(response: AnyResponse) -> ApplyResult:
    return ApplyResult.from_json(_json(response), _replayed(response))


def _weights(response: AnyResponse) -> np.ndarray | KeyedWeights:
    if response.headers.get("content-type", "").startswith(codecs.NPZ):
        arrays = codecs.decode_npz(response.content, ("ids", "weights"))
        return KeyedWeights(arrays["ids"], arrays["weights"])
    return codecs.decode_npy(response.content)


def _lookup(response: AnyResponse) -> Lookup:
    if response.headers.get("content-type", "").startswith(codecs.NPY):
        return Lookup(codecs.decode_npy(response.content), int(response.headers["x-table-step"]))
    reply = _json(response)
    vectors = np.asarray(reply["vectors"], dtype=np.float64).reshape(reply["shape"])
    return Lookup(vectors, reply["step"])


def _labels(response: AnyResponse) -> dict[int, str]:
    reply = _json(response)
    return {row: label for row, label in zip(reply["ids"], reply["labels"], strict=True)
            if label is not None}


def _neighbours(response: AnyResponse) -> Neighbours:
    return Neighbours.from_json(_json(response))


def _neighbours_batch(response: AnyResponse) -> list[Neighbours]:
    return [Neighbours.from_json(result) for result in _json(response)["results"]]


def _query_items(items: Any) -> list[Any]:
    """A query's items as JSON: ids (int), labels (str), vectors (lists of floats). One item
    alone (a label, an id or a 1-d vector) is a list of one."""
    if isinstance(items, str | int | np.integer) or (
            isinstance(items, np.ndarray) and items.ndim == 1):
        items = [items]
    ready: list[Any] = []
    for item in items:
        if isinstance(item, np.integer):
            ready.append(int(item))
        elif isinstance(item, str | int):
            ready.append(item)
        else:
            ready.append(np.asarray(item, dtype=np.float64).tolist())
    return ready


def _table_path(name: str, *rest: str) -> str:
    return "/".join(("/v1/tables", quote(name, safe=""), *rest))


def _once() -> dict[str, str]:
    """Headers of a call that changes something: a fresh key, reused by its retries."""
    return {"Idempotency-Key": uuid.uuid4().hex}


class Requests:
    """Builds the Call of each endpoint in one wire format ("binary": .npy/.npz, or "json")."""

    def __init__(self, wire: WireFormat = "binary") -> None:
        if wire not in ("binary", "json"):
            raise ValueError(f"wire must be 'binary' or 'json', got {wire!r}")
        self.binary = wire == "binary"
        self.json_headers = {"Content-Type": codecs.JSON, "Accept": codecs.JSON}
        self.npy_headers = {"Content-Type": codecs.NPY, "Accept": codecs.NPY}

    def health(self) -> Call[dict[str, Any]]:
        return Call("GET", "/healthz", _json)

    def create_table(
        self, name: str, num_embeddings: int | None, embedding_dim: int | None, *, dtype: str,
        init: str | Mapping[str, Any] | None, seed: int | None,
        optimizer: str | Mapping[str, Any] | None, max_staleness: int | None,
        dynamic: Mapping[str, Any] | None,
        shards: int | None = None,
    ) -> Call[TableInfo]:
        if embedding_dim is None:
            raise TypeError("create_table() needs embedding_dim")
        spec: dict[str, Any] = {"name": name, "embedding_dim": embedding_dim, "dtype": dtype}
        if num_embeddings is not None:  # the server says what is wrong with both or neither
            spec["num_embeddings"] = num_embeddings
        if dynamic is not None:
            spec["dynamic"] = dict(dynamic)
        for field, value in (("init", init), ("optimizer", optimizer)):
            if value is not None:
                spec[field] = {"kind": value} if isinstance(value, str) else dict(value)
        for field, number in (("seed", seed), ("max_staleness", max_staleness),
                              ("shards", shards)):
            if number is not None:
                spec[field] = number
        return Call("POST", "/v1/tables", _table_info, codecs.encode_json(spec),
                    {**self.json_headers, **_once()})

    def get_table(self, name: str) -> Call[TableInfo]:
        return Call("GET", _table_path(name), _table_info)

    def shard_map(self, name: str) -> Call[dict[str, Any]]:
        """Where a cluster-mode table's shards are (service.client._routing)."""
        return Call("GET", _table_path(name, "shards"), _json)

    def list_tables(self) -> Call[list[TableInfo]]:
        return Call("GET", "/v1/tables", _table_list)

    def delete_table(self, name: str) -> Call[None]:
        return Call("DELETE", _table_path(name), _nothing, headers=_once())

    def lookup(self, name: str, ids: Any) -> Call[Lookup]:
        id_array = codecs.as_ids(ids)
        if self.binary:
            content = codecs.encode_npy(id_array)
            return Call("POST", _table_path(name, "lookup"), _lookup, content, self.npy_headers)
        content = codecs.encode_json({"ids": codecs.json_ready(id_array)})
        return Call("POST", _table_path(name, "lookup"), _lookup, content, self.json_headers)

    def push_gradients(
        self, name: str, ids: Any, grads: Any, *, apply: bool, step: int | None
    ) -> Call[PushResult]:
        id_array, grad_array = codecs.as_ids(ids), np.asarray(grads)
        path = _table_path(name, "gradients")
        if self.binary:
            params = {"apply": "true"} if apply else {}
            if step is not None:
                params["step"] = str(step)
            content = codecs.encode_npy_pair(id_array, grad_array)
            headers = {"Content-Type": codecs.NPY, "Accept": codecs.JSON, **_once()}
            return Call("POST", path, _push_result, content, headers, params or None)
        body: dict[str, Any] = {"ids": codecs.json_ready(id_array),
                                "grads": codecs.json_ready(grad_array), "apply": apply}
        if step is not None:
            body["step"] = step
        return Call("POST", path, _push_result, codecs.encode_json(body),
                    {**self.json_headers, **_once()})

    def apply(self, name: str, *, lr: float | None, average: bool) -> Call[ApplyResult]:
        body: dict[str, Any] = {"average": average}
        if lr is not None:
            body["lr"] = lr
        return Call("POST", _table_path(name, "apply"), _apply_result, codecs.encode_json(body),
                    {**self.json_headers, **_once()})

    def snapshot(self) -> Call[dict[str, Any]]:
        return Call("POST", "/v1/snapshots", _json, b"", {**self.json_headers, **_once()})

    def export_weights(self, name: str) -> Call[np.ndarray | KeyedWeights]:
        return Call("GET", _table_path(name, "weights"), _weights,
                    headers={"Accept": f"{codecs.NPY}, {codecs.NPZ}"})

    def set_labels(self, name: str, labels: Any, ids: Any, merge: bool) -> Call[TableInfo]:
        body: dict[str, Any] = {"labels": list(labels), "merge": merge}
        if ids is not None:
            body["ids"] = codecs.as_keys_if_wide(codecs.as_ids(ids)).reshape(-1).tolist()
        return Call("PUT", _table_path(name, "labels"), _table_info, codecs.encode_json(body),
                    {**self.json_headers, **_once()})

    def get_labels(self, name: str, ids: Any) -> Call[dict[int, str]]:
        params = None
        if ids is not None:
            params = {"ids": ",".join(map(str, codecs.as_keys_if_wide(
                codecs.as_ids(ids)).reshape(-1).tolist()))}
        return Call("GET", _table_path(name, "labels"), _labels, params=params)

    def most_similar(
        self, name: str, positive: Any, negative: Any, k: int, metric: str
    ) -> Call[Neighbours]:
        body = {"positive": _query_items(positive), "negative": _query_items(negative),
                "k": k, "metric": metric}
        return Call("POST", _table_path(name, "neighbors"), _neighbours,
                    codecs.encode_json(body), self.json_headers)

    def most_similar_batch(
        self, name: str, queries: Any, k: int, metric: str
    ) -> Call[list[Neighbours]]:
        body = {"queries": [{"positive": _query_items(query.get("positive", [])),
                             "negative": _query_items(query.get("negative", []))}
                            for query in queries], "k": k, "metric": metric}
        return Call("POST", _table_path(name, "neighbors"), _neighbours_batch,
                    codecs.encode_json(body), self.json_headers)

    def import_weights(self, name: str, weights: Any, ids: Any) -> Call[TableInfo]:
        if ids is None:
            content, media = codecs.encode_npy(np.asarray(weights)), codecs.NPY
        else:
            content = codecs.encode_npz(ids=codecs.as_ids(ids), weights=np.asarray(weights))
            media = codecs.NPZ
        return Call("PUT", _table_path(name, "weights"), _table_info, content,
                    {"Content-Type": media, "Accept": codecs.JSON, **_once()})
