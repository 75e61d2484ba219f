"""Body size limit as ASGI middleware: 413 before reading past the limit, chunked bodies too."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import PayloadTooLarge, service_error_reply


class BodyTooLarge(HTTPException):
    """Raised by receive() once a body (chunked or not) passes the limit. An HTTPException, so
    FastAPI's own body parsing (which turns other errors into 400) passes it on as the 413."""

    def __init__(self, limit: int, setting: str = "max_body_bytes") -> None:
        super().__init__(413, f"body exceeds {setting}={limit}", {"connection": "close"})


@dataclass(frozen=True)
class RouteLimit:
    """Another limit for one method and path (regex, matched whole): e.g. weight imports."""

    method: str
    path: str
    setting: str  # named in the 413's detail
    limit: int
    pattern: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", re.compile(self.path))

    def matches(self, scope: Scope) -> bool:
        return scope["method"] == self.method and self.pattern.fullmatch(scope["path"]) is not None


class BodySizeLimit:
    def __init__(
        self, app: ASGIApp, max_body_bytes: int, route_limits: Sequence[RouteLimit] = ()
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.route_limits = tuple(route_limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.max_body_bytes, "max_body_bytes"
        for route in self.route_limits:
            if route.matches(scope):
                limit, setting = route.limit, route.setting
                break
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    detail = f"Content-Length {declared} exceeds {setting}={limit}"
                    await self._refuse(scope, receive, send, detail)
                    return
                break
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, setting)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, receive, send, f"body exceeds {setting}={limit}")

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, detail: str) -> None:
        # the rest of the body is not read: the connection cannot carry another request
        reply = service_error_reply(PayloadTooLarge(detail), {"Connection": "close"})
        await reply(scope, receive, send)
