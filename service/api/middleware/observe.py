"""One structured log line and one metrics observation per request.

The observer is the outermost part of the service's middleware, so refusals made by the others
(401, 413) are counted and logged too. A client that goes away before its request is read
(ClientDisconnect) is not a server error: it is logged and counted as 499 (nginx's "client
closed request"), and 408 when the server cut it off for being too slow
(service.api.connections marks the scope). The route label is the route template
(`/v1/tables/{name}/lookup`), never the raw path, so neither ids nor arbitrary paths grow the
label set; paths no route matches share `<unmatched>`.

Per request it costs a dictionary look-up of the metric series already bound to the request's
method, route and status (`AppMetrics.series`), and, only while the access log's level is on,
the line: its fields are not even gathered at a level that is off.

A log line (JSON, logger `service.access`, level INFO; service.api.logs makes every line of
the `service` loggers JSON):

    {"time": "2025-01-01T12:00:00.123Z", "level": "info", "logger": "service.access",
     "event": "request", "method": "POST", "route": "/v1/tables/{name}/lookup", "status": 200,
     "duration_ms": 1.42, "table": "words", "rows": 4096}
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import Scope

from service.api.metrics import AppMetrics
from service.api.middleware.routes import Resolved, template_of

access_log = logging.getLogger("service.access")
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before its reply
TIMED_OUT = "embed.timed_out"  # scope key: the server closed the connection (a 408 was sent)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
INFO = logging.INFO


class RequestObserver:
    """Counts, times and logs the requests of one app."""

    def __init__(self, metrics: AppMetrics) -> None:
        self.metrics = metrics

    def record(self, scope: Scope, resolved: Resolved, status: int, seconds: float) -> None:
        route = scope.get("route")  # the router's (or the fast path's) pick, else ours
        template = resolved.template if route is None or route is resolved.route \
            else template_of(route)
        method = scope["method"]
        # the method is the client's string: any other would be a new series (unbounded)
        counter, latency = self.metrics.series(method if method in METHODS else "other",
                                               template, status)
        counter.inc()
        latency.observe(seconds)
        if access_log.isEnabledFor(INFO):
            self._log(scope, resolved, method, template, status, seconds)

    @staticmethod
    def _log(scope: Scope, resolved: Resolved, method: str, template: str, status: int,
             seconds: float) -> None:
        line: dict[str, Any] = {"event": "request", "method": method, "route": template,
                                "status": status, "duration_ms": round(seconds * 1000, 3)}
        name = scope.get("path_params", resolved.path_params).get("name")
        if isinstance(name, str):
            line["table"] = name[:100]
        line.update(scope.get("embed.log", ()))
        # the record made here, not by access_log.info(), which looks up the caller's file and
        # line on every call (nothing here prints them)
        access_log.handle(access_log.makeRecord(
            access_log.name, INFO, __file__, 0, "%s %s %d", (method, template, status), None,
            extra={"fields": line}))
