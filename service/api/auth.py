"""Bearer-token authentication as ASGI middleware: deny by default.

With a token configured (EMBED_TOKEN), every request needs `Authorization: Bearer <token>`
except those to the few open paths below: liveness, metrics (names and counts, no table
contents) and the API description (the same for every deployment; no data). Anything else,
including every /v1 route another module adds later and paths no route matches, gets 401 before
the request body is read. Middleware rather than a router dependency because it covers routes
nobody remembered to protect.

The comparison is constant-time (hmac.compare_digest on SHA-256 digests, so neither the content
nor the length of the token leaks through timing).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.docs_ui import ASSETS_PATH, DOCS_PATH, OAUTH2_REDIRECT_PATH, REDOC_PATH
from service.api.errors import Unauthorized, service_error_reply
from service.api.ui_page import UI_ASSETS_PATH, UI_PATH

OPEN_PATHS = frozenset({"/healthz", "/metrics", "/openapi.json", DOCS_PATH, OAUTH2_REDIRECT_PATH,
                        REDOC_PATH, UI_PATH})
# the API pages' and /ui's scripts, styles and fonts (no data: /ui asks for the token itself)
OPEN_PREFIXES = (ASSETS_PATH + "/", UI_ASSETS_PATH + "/")


def route_path(scope: Scope) -> str:
    """The path the router matches: the request path without the app's root_path."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def requires_token(path: str) -> bool:
    return path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES)


class BearerAuth:
    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.digest = hashlib.sha256(token.encode()).digest()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not requires_token(route_path(scope)):
            await self.app(scope, receive, send)
            return
        problem = self._problem(scope)
        if problem is None:
            await self.app(scope, receive, send)
            return
        reply = service_error_reply(
            Unauthorized(problem), {"WWW-Authenticate": 'Bearer realm="embedding-service"'})
        await reply(scope, receive, send)

    def _problem(self, scope: Scope) -> str | None:
        """Why the request is refused, or None when it carries the right token."""
        values = [value for key, value in scope["headers"] if key == b"authorization"]
        if not values:
            return "Authorization header is missing; send 'Authorization: Bearer <token>'"
        scheme, _, credentials = values[0].decode("latin-1").strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return "Authorization header must be 'Bearer <token>'"
        given = hashlib.sha256(credentials.strip().encode("latin-1")).digest()
        if not hmac.compare_digest(given, self.digest):
            return "Authorization token is not valid"
        return None


def document_bearer_auth(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the bearer scheme and a 401 reply to every operation that needs the token."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http", "scheme": "bearer",
        "description": "The token set in EMBED_TOKEN on the service.",
    }
    for path, operations in schema.get("paths", {}).items():
        if not requires_token(path):
            continue
        for operation in operations.values():
            operation["security"] = [{"bearer": []}]
            operation.setdefault("responses", {})["401"] = {
                "description": "Missing or wrong bearer token",
                "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ErrorReply"}}},
            }
    return schema
