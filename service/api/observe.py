"""One structured log line and one metrics observation per request, as ASGI middleware.

It is the outermost middleware, so refusals made by the others (401, 413) are counted and logged
too. A client that goes away before its request is read (ClientDisconnect) is not a server
error: it is logged and counted as 499 (nginx's "client closed request"), and 408 when the
server cut it off for being too slow (service.api.connections marks the scope). The route label
is the route template (`/v1/tables/{name}/lookup`), never the raw path, so neither ids nor
arbitrary paths grow the label set; paths no route matches share `<unmatched>`.

A log line (JSON, logger `service.access`, level INFO; `configure_logging` makes every line of
the `service` loggers JSON):

    {"time": "2025-01-01T12:00:00.123Z", "level": "info", "logger": "service.access",
     "event": "request", "method": "POST", "route": "/v1/tables/{name}/lookup", "status": 200,
     "duration_ms": 1.42, "table": "words", "rows": 4096}
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.metrics import AppMetrics

access_log = logging.getLogger("service.access")
UNMATCHED = "<unmatched>"
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before its reply
TIMED_OUT = "embed.timed_out"  # scope key: the server closed the connection (a 408 was sent)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope, routes: list[BaseRoute]) -> str:
    """The path template of the route that served this request (FastAPI's router puts it in the
    scope). A request refused before routing (401, 413) is matched here, so it is counted
    under its route too; it also gets the path parameters (the table name for the log)."""
    route = scope.get("route")
    if route is None:
        for candidate in flat_routes(routes):
            match, child_scope = candidate.matches(scope)
            if match is Match.FULL:
                route = candidate
                scope.setdefault("path_params", child_scope.get("path_params", {}))
                break
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


def flat_routes(routes: list[BaseRoute]) -> list[Any]:
    """Every route, included routers expanded (FastAPI >= 0.13x keeps them as lazy branches)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: included routes are plain entries of the list
        return list(routes)
    return list(iter_route_contexts(routes))


class RequestObserver:
    def __init__(self, app: ASGIApp, metrics: AppMetrics, routes: list[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def observing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        except ClientDisconnect:  # nobody is left to answer, and nothing went wrong here
            status = 408 if scope.get(TIMED_OUT) else CLIENT_CLOSED_REQUEST
        finally:
            self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = route_template(scope, self.routes)
        # the method is the client's string: any other would be a new series (unbounded)
        method = scope["method"] if scope["method"] in METHODS else "other"
        self.metrics.observe_request(method, route, status, seconds)
        if not access_log.isEnabledFor(logging.INFO):
            return
        line: dict[str, Any] = {
            "event": "request",
            "method": scope["method"],
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
        }
        name = scope.get("path_params", {}).get("name")
        if isinstance(name, str):
            line["table"] = name[:100]
        line.update(scope.get("embed.log", {}))
        access_log.info("%s %s %d", scope["method"], route, status, extra={"fields": line})


class JsonLines(logging.Formatter):
    """One JSON object a line: time, level, logger, then the record's `fields` or its message."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        line: dict[str, Any] = {"time": stamp.replace("+00:00", "Z"),
                                "level": record.levelname.lower(), "logger": record.name}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (test runners swap it)."""

    embed_json = True

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(level: str, *others: str) -> None:
    """Send the `service` loggers (and the `others`: "uvicorn" under python -m service.api) to
    stderr as JSON lines at `level` (once per process)."""
    for name in ("service", *others):
        logger = logging.getLogger(name)
        logger.setLevel(level.upper())
        if not any(getattr(handler, "embed_json", False) for handler in logger.handlers):
            handler = StderrHandler()
            handler.setFormatter(JsonLines())
            logger.addHandler(handler)
