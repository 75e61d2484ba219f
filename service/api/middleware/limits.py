"""Body size limits: 413 before reading past the limit, chunked bodies too.

Every body is bounded by max_body_bytes, or by the Settings field its route names
(`route_policy(body_limit="max_weights_body_bytes")`: a weight import is a whole table). A
declared Content-Length over the limit is refused before any of the body is read. A body
without one (chunked) is counted as it is read, and refused once it passes the limit: its
receive() raises BodyTooLarge, which FastAPI's body parsing passes on as the 413 and the
middleware answers if nothing else did. A body with a Content-Length needs no counting: the
server delivers exactly the declared bytes (HTTP/1.1 framing), so it is handed on as it is.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Message, Receive

from service.api.errors import PayloadTooLarge, service_error_reply
from service.api.middleware.routes import RoutePolicy
from service.api.settings import Settings


class BodyTooLarge(HTTPException):
    """Raised by receive() once a body (chunked or not) passes the limit. An HTTPException, so
    FastAPI's own body parsing (which turns other errors into 400) passes it on as the 413."""

    def __init__(self, limit: int, setting: str = "max_body_bytes") -> None:
        super().__init__(413, f"body exceeds {setting}={limit}", {"connection": "close"})
        self.limit = limit
        self.setting = setting


def too_large(detail: str) -> Response:
    """The 413 of a body over its limit. The rest of the body is not read: the connection
    cannot carry another request."""
    return service_error_reply(PayloadTooLarge(detail), {"Connection": "close"})


class BodyLimits:
    """The body limits of one app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.max_body_bytes = settings.max_body_bytes

    def limit_of(self, policy: RoutePolicy) -> tuple[int, str]:
        if policy.body_limit is None:
            return self.max_body_bytes, "max_body_bytes"
        return getattr(self.settings, policy.body_limit), policy.body_limit

    def refusal(self, headers: Headers, policy: RoutePolicy) -> tuple[Response | None, int | None]:
        """(a 413 for a declared length over the route's limit, or None; the declared length,
        or None if there is none to trust)."""
        declared = headers.get("content-length")
        if declared is None:
            return None, None
        try:
            length = int(declared)
        except ValueError:
            return None, None
        limit, setting = self.limit_of(policy)
        if length > limit:
            return too_large(f"Content-Length {length} exceeds {setting}={limit}"), length
        return None, length

    def counting(self, receive: Receive, policy: RoutePolicy) -> Receive:
        """receive() for a body of unknown length: BodyTooLarge once it passes the limit."""
        limit, setting = self.limit_of(policy)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, setting)
            return message

        return limited_receive
