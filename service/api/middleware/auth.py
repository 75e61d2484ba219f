"""Bearer-token authentication: deny by default.

With a token configured (EMBED_TOKEN), every request needs `Authorization: Bearer <token>`
except those to the routes marked open (`route_policy(open=True)`: liveness, metrics, the API
description and pages: names and counts, no table contents). Anything else, including every
/v1 route another module adds later and paths no route matches, gets 401 before the request
body is read. Part of the middleware rather than a router dependency because it covers routes
nobody remembered to protect. Without a token, nothing of this runs.

The comparison is constant-time (hmac.compare_digest on SHA-256 digests, so neither the content
nor the length of the token leaks through timing).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import Response

from service.api.errors import Unauthorized, service_error_reply

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="embedding-service"'}


class BearerAuth:
    """The token check of one app."""

    def __init__(self, token: str) -> None:
        self.digest = hashlib.sha256(token.encode()).digest()

    def refusal(self, headers: Headers) -> Response | None:
        """The 401 reply to a request without the right token, or None when it has it."""
        problem = self.problem(headers.get("authorization"))
        return None if problem is None else service_error_reply(Unauthorized(problem), CHALLENGE)

    def problem(self, authorization: str | None) -> str | None:
        """Why the request is refused, or None when it carries the right token."""
        if authorization is None:
            return "Authorization header is missing; send 'Authorization: Bearer <token>'"
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return "Authorization header must be 'Bearer <token>'"
        given = hashlib.sha256(credentials.strip().encode("latin-1")).digest()
        if not hmac.compare_digest(given, self.digest):
            return "Authorization token is not valid"
        return None


def document_bearer_auth(schema: dict[str, Any], open_paths: list[str]) -> dict[str, Any]:
    """Add the bearer scheme and a 401 reply to every operation that needs the token (all but
    those of the open routes' paths)."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http", "scheme": "bearer",
        "description": "The token set in EMBED_TOKEN on the service.",
    }
    for path, operations in schema.get("paths", {}).items():
        if path in open_paths:
            continue
        for operation in operations.values():
            operation["security"] = [{"bearer": []}]
            operation.setdefault("responses", {})["401"] = {
                "description": "Missing or wrong bearer token",
                "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ErrorReply"}}},
            }
    return schema
