"""The binary fast path: .npy lookups and .npy/.npz pushes served by pure ASGI.

A 32-id lookup through FastAPI spends most of its time in the framework: matching the request
against every route, solving the dependencies, wrapping the endpoint in exception middleware.
This middleware, the innermost of the app's own, recognises the two hot requests by method,
path and Content-Type, and hands them straight to the same handlers the FastAPI routes call
(service.api.handlers). Authentication, body limits, metrics, logging and idempotency are the
middleware outside it, as for every request; errors get the replies of the app's exception
handlers (service.api.errors); the route template and table name are put in the scope as
FastAPI's router would, for metrics and the access log. Everything else (JSON bodies, other
paths) goes on to FastAPI. Settings.binary_fast_path = False turns it off.

bench/compare.py measures what it saves; tests/api/test_fast_path.py checks that its replies
and errors are the FastAPI routes' own, byte for byte.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from starlette.datastructures import State
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api import handlers
from service.api.auth import route_path
from service.api.codecs import NPY, NPZ
from service.api.errors import http_error_reply, service_error_reply
from service.api.handlers import Exchange
from service.api.negotiation import media_type
from service.api.observe import flat_routes
from service.core.errors import EmbeddingServiceError

# The paths of the two operations, matched as the router matches "/v1/tables/{name}/..."
OPERATION_PATH = re.compile(r"/v1/tables/(?P<name>[^/]+)/(?P<operation>lookup|gradients)")
BINARY_TYPES = {"lookup": (NPY,), "gradients": (NPZ, NPY)}
HANDLERS = {"lookup": handlers.lookup, "gradients": handlers.push}


class BinaryFastPath:
    def __init__(self, app: ASGIApp, state: State, routes: list[BaseRoute]) -> None:
        self.app = app
        self.state = state  # the app's: registry, settings and metrics (set up by create_app)
        self.routes = routes  # the app's, filled in after this middleware is added
        self._route_of: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        if scope["type"] == "http" and scope["method"] == "POST":
            match = OPERATION_PATH.fullmatch(route_path(scope))
        if match is None:
            await self.app(scope, receive, send)
            return
        content_type = accept = length = ""
        for key, value in scope["headers"]:  # the first of each, as Request.headers.get
            if key == b"content-type" and not content_type:
                content_type = value.decode("latin-1")
            elif key == b"accept" and not accept:
                accept = value.decode("latin-1")
            elif key == b"content-length" and not length:
                length = value.decode("latin-1")
        operation = match["operation"]
        route = self._route(operation)
        if media_type(content_type) not in BINARY_TYPES[operation] or route is None:
            await self.app(scope, receive, send)
            return
        scope["route"], scope["endpoint"] = route, route.endpoint  # as the router sets them
        scope["path_params"] = {"name": match["name"]}

        async def read_body() -> bytes | memoryview:
            return await read_into_buffer(receive, int(length) if length.isdigit() else None)

        state = self.state
        exchange = Exchange(
            match["name"], content_type, accept, scope.get("query_string", b""), read_body,
            scope, state.registry, state.settings, state.metrics,
        )
        reply: Response
        try:
            reply = await HANDLERS[operation](exchange)
        except EmbeddingServiceError as error:
            reply = service_error_reply(error)
        except HTTPException as error:  # the body limit's 413 (raised by receive)
            reply = http_error_reply(error)
        await reply(scope, receive, send)

    def _route(self, operation: str) -> Any:
        """The FastAPI route serving `operation`, for the metrics' route label."""
        if operation not in self._route_of:
            path = f"/v1/tables/{{name}}/{operation}"
            self._route_of[operation] = next(
                (route for route in flat_routes(self.routes)
                 if getattr(route, "path_format", None) == path
                 and "POST" in (getattr(route, "methods", None) or ())),
                None,
            )
        return self._route_of[operation]


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
