"""The binary fast path: .npy lookups and .npy/.npz pushes served without FastAPI's routing.

A 32-id lookup through FastAPI spends most of its time in the framework: matching the request
against every route, solving the dependencies, wrapping the endpoint in exception middleware.
A route that has a handler for binary bodies says so (`route_policy(binary=handlers.lookup,
binary_types=(NPY,))`, service.api.routes.operations); for such a request with one of those
Content-Types, the service's middleware hands it straight to that handler, the same one the
FastAPI route calls (service.api.handlers). Authentication, body limits, metrics, logging and
idempotency keys are the middleware's, as for every request; errors get the replies of the
app's exception handlers (service.api.errors); the route and table name are put in the scope as
FastAPI's router would, for metrics and the access log. Everything else (JSON bodies, other
routes) goes on to FastAPI. Settings.binary_fast_path = False turns it off.

bench/compare.py measures what it saves; tests/api/test_fast_path.py checks that its replies
and errors are the FastAPI routes' own, byte for byte.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from starlette.datastructures import Headers, State
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Message, Receive, Scope

from service.api.errors import http_error_reply, service_error_reply
from service.api.handlers import Exchange
from service.api.middleware.routes import Resolved
from service.api.negotiation import media_type
from service.core.errors import EmbeddingServiceError


class BinaryFastPath:
    """Serves the binary bodies of the routes that have a handler for them."""

    def __init__(self, state: State) -> None:
        self.state = state  # the app's: registry, settings and metrics (set up by create_app)

    def takes(self, resolved: Resolved, headers: Headers) -> str | None:
        """The request's Content-Type if the fast path serves it, else None."""
        policy = resolved.policy
        if policy.binary is None or resolved.route is None:
            return None
        content_type = headers.get("content-type", "")
        return content_type if media_type(content_type) in policy.binary_types else None

    async def reply(self, scope: Scope, receive: Receive, resolved: Resolved, headers: Headers,
                    content_type: str, length: int | None) -> Response:
        """The handler's reply, or the reply to its error. `length`: the body's declared
        Content-Length (None without one)."""
        route = resolved.route
        scope["route"], scope["endpoint"] = route, route.endpoint  # as the router sets them
        scope["path_params"] = params = dict(resolved.path_params)
        state = self.state
        exchange = Exchange(
            params["name"], content_type, headers.get("accept", ""),
            scope.get("query_string", b""), partial(read_into_buffer, receive, length), scope,
            state.registry, state.settings, state.metrics,
        )
        handler = resolved.policy.binary
        assert handler is not None  # takes() said so
        try:
            return await handler(exchange)
        except EmbeddingServiceError as error:
            return service_error_reply(error)
        except HTTPException as error:  # the body limit's 413 (raised by receive)
            return http_error_reply(error)


async def read_into_buffer(receive: Receive, length: int | None) -> bytes | memoryview:
    """The request body. One chunk is returned as it came (no copy); several, with the
    Content-Length known, are copied one by one as they arrive into one buffer allocated once
    (not zeroed), and a memoryview of it is returned: no list of chunks and no join of them at
    the end, and the arrays parsed from it (np.frombuffer) are views of it. A body without a
    Content-Length (chunked), or longer than it said, is joined."""
    message: Message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnect()
    chunk: bytes = message.get("body", b"")
    more: bool = message.get("more_body", False)
    if not more:
        return chunk  # the whole body in one piece
    if length is None or len(chunk) > length:
        return await _joined(receive, [chunk])
    buffer = np.empty(length, dtype=np.uint8).data  # (length,) bytes, as a memoryview
    buffer[: len(chunk)] = chunk
    filled = len(chunk)
    while more:
        chunk, more = await _next_chunk(receive)
        if filled + len(chunk) > length:
            head = [bytes(buffer[:filled]), chunk]
            return await _joined(receive, head) if more else b"".join(head)
        buffer[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
    return buffer[:filled]


async def _next_chunk(receive: Receive) -> tuple[bytes, bool]:
    message: Message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnect()
    return message.get("body", b""), message.get("more_body", False)


async def _joined(receive: Receive, chunks: list[bytes]) -> bytes:
    """The chunks so far and the rest of the body, joined."""
    more = True
    while more:
        chunk, more = await _next_chunk(receive)
        chunks.append(chunk)
    return b"".join(chunks)
