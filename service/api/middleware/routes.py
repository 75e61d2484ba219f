"""What the middleware knows of a request's route, taken from the routes themselves.

A route states what the middleware must treat differently about it by marking its endpoint
with `route_policy`, next to its path and methods, instead of the middleware repeating paths
as lists or regexes:

    @router.get("/healthz")
    @route_policy(open=True)            # no token needed: it holds no data
    async def healthz() -> Health: ...

    @router.put("/v1/tables/{name}/weights")
    @route_policy(body_limit="max_weights_body_bytes")   # a Settings field, not max_body_bytes
    async def import_weights(...) -> TableInfo: ...

    @router.post("/{name}/lookup")
    @route_policy(binary=handlers.lookup, binary_types=(NPY,))   # the binary fast path
    async def lookup(...) -> Response: ...

`RouteTable.resolve(scope)` matches a request against the app's routes as the router does
(first full match; a path match with another method counts for `open`) and remembers the
answer for its method and path, so the routes are searched once per distinct request line, not
once per request. Everything unmarked needs the token, and a path no route matches too (deny
by default).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette._utils import get_route_path
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

POLICY_ATTRIBUTE = "__embed_route_policy__"
UNMATCHED = "<unmatched>"  # the metrics' route label of a path no route serves
MAX_REMEMBERED = 4096  # distinct (method, path) resolutions kept; then the memory starts over

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
# a handler of service.api.handlers: it takes an Exchange (not imported here: handlers import
# the settings and the core, this module only starlette) and gives the reply
BinaryHandler = Callable[[Any], Awaitable[Response]]


@dataclass(frozen=True)
class RoutePolicy:
    """How the middleware treats a route's requests (the default: none of this)."""

    open: bool = False  # served without the bearer token (it shows no table data)
    body_limit: str | None = None  # the Settings field bounding its body (max_body_bytes else)
    binary: BinaryHandler | None = None  # handler serving its binary bodies directly
    binary_types: tuple[str, ...] = ()  # the media types `binary` takes


DEFAULT_POLICY = RoutePolicy()


def route_policy(**policy: Any) -> Callable[[Endpoint], Endpoint]:
    """Mark an endpoint with a RoutePolicy (below the router's decorator: it marks the
    function the router registers)."""
    marked = RoutePolicy(**policy)

    def mark(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, POLICY_ATTRIBUTE, marked)
        return endpoint

    return mark


def policy_of(route: Any) -> RoutePolicy:
    policy = getattr(getattr(route, "endpoint", None), POLICY_ATTRIBUTE, None)
    return policy if isinstance(policy, RoutePolicy) else DEFAULT_POLICY


def flat_routes(routes: Sequence[BaseRoute]) -> list[Any]:
    """Every route, included routers expanded (FastAPI >= 0.13x keeps them as lazy branches)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: included routes are plain entries of the list
        return list(routes)
    return list(iter_route_contexts(routes))


def template_of(route: Any) -> str:
    """A route's path template, the metrics' route label."""
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


@dataclass(frozen=True)
class Resolved:
    """A request's route as the router would pick it."""

    route: Any  # the route serving this method and path (a full match), or None
    path_params: dict[str, Any]  # of that route (the table name), or {}
    policy: RoutePolicy  # of the route matching the path (by any method), or the default
    template: str  # route's template, or UNMATCHED


NOT_FOUND = Resolved(None, {}, DEFAULT_POLICY, UNMATCHED)


@dataclass
class RouteTable:
    """The app's routes as the middleware sees them: resolved once per method and path."""

    routes: Sequence[BaseRoute]  # the app's list, read when first needed (all included by then)
    _flat: list[Any] | None = None
    _remembered: dict[tuple[str, str], Resolved] = field(default_factory=dict)

    def all(self) -> list[Any]:
        if self._flat is None:
            self._flat = flat_routes(self.routes)
        return self._flat

    def resolve(self, scope: Scope) -> Resolved:
        key = (scope["method"], get_route_path(scope))
        found = self._remembered.get(key)
        if found is None:
            found = self._match(scope)
            if len(self._remembered) >= MAX_REMEMBERED:  # made-up paths cannot grow it forever
                self._remembered.clear()
            self._remembered[key] = found
        return found

    def _match(self, scope: Scope) -> Resolved:
        partial = None
        for route in self.all():
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                return Resolved(route, dict(child_scope.get("path_params", {})), policy_of(route),
                                template_of(route))
            if match is Match.PARTIAL and partial is None:
                partial = route
        if partial is None:
            return NOT_FOUND
        return Resolved(None, {}, policy_of(partial), UNMATCHED)

    def resolve_path(self, method: str, path: str) -> Resolved:
        """resolve() of a request line, without a request."""
        return self.resolve({"type": "http", "method": method, "path": path, "root_path": ""})

    def open_paths(self) -> list[str]:
        """The templates of the open routes (the OpenAPI document marks the others)."""
        return [template_of(route) for route in self.all() if policy_of(route).open]
