"""The service's middleware as one hop (service.api.middleware): routes resolved as the router
resolves them, and once per request line; what each route declares (open, its body limit);
auth, idempotency keys, metrics and the access log costing nothing when unused; the 500 reply
that Starlette's ServerErrorMiddleware gave before."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import prometheus_client.metrics
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from service.api import codecs
from service.api.middleware import routes as middleware_routes
from service.api.middleware.idempotency import Idempotency
from service.api.middleware.observe import RequestObserver
from service.api.middleware.routes import (
    MAX_REMEMBERED,
    POLICY_ATTRIBUTE,
    UNMATCHED,
    RouteTable,
    flat_routes,
)
from service.api.middleware.stack import ServiceMiddleware
from service.api.routes import operations
from service.api.settings import Settings

NPY = {"Content-Type": codecs.NPY}
TABLE = {"name": "words", "num_embeddings": 10, "embedding_dim": 3}


def concrete(template: str) -> str:
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: "words" if m[1] == "name" else "x", template)


def test_routes_resolve_as_the_router_picks_them(make_app: Callable[..., FastAPI]) -> None:
    app = make_app()
    table = RouteTable(app.router.routes)
    for route in flat_routes(app.router.routes):
        for method in route.methods or ():
            path = concrete(route.path_format)
            resolved = table.resolve_path(method, path)
            # the first route the router would match (a template may shadow another)
            first = next(r for r in flat_routes(app.router.routes)
                         if r.matches({"type": "http", "method": method, "path": path,
                                       "root_path": ""})[0].name == "FULL")
            assert (resolved.route.endpoint, resolved.template) == (
                first.endpoint, first.path_format), (method, path)
    lookup = table.resolve_path("GET", "/v1/tables/words/lookup")  # the path, not the method:
    # no route serves it (the router answers 405), the path's route's policy applies (auth)
    assert (lookup.route, lookup.template) == (None, UNMATCHED)
    assert lookup.policy is getattr(operations.lookup, POLICY_ATTRIBUTE)
    assert table.resolve_path("POST", "/nowhere").template == UNMATCHED
    assert table.resolve_path("POST", "/v1/tables/words/lookup").path_params == {"name": "words"}


def test_a_request_line_is_resolved_once_and_the_memory_is_bounded(
    make_app: Callable[..., FastAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    table = RouteTable(make_app().router.routes)
    searches = []
    search = RouteTable._match
    monkeypatch.setattr(RouteTable, "_match", lambda self, scope: searches.append(1) or search(
        self, scope))
    for _ in range(3):
        table.resolve_path("POST", "/v1/tables/words/lookup")
    assert len(searches) == 1
    for number in range(MAX_REMEMBERED + 10):
        table.resolve_path("GET", f"/made-up/{number}")
    assert len(table._remembered) <= MAX_REMEMBERED


def test_routes_declare_what_is_open_and_their_body_limit(
    make_app: Callable[..., FastAPI]
) -> None:
    app = make_app(memory_budget_bytes=12345)
    table = RouteTable(app.router.routes)
    assert set(table.open_paths()) == {
        "/healthz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect",
        "/docs/assets/{path}", "/redoc", "/ui", "/ui/assets/{file}"}
    limited = {route.path_format: middleware_routes.policy_of(route).body_limit
               for route in flat_routes(app.router.routes)
               if middleware_routes.policy_of(route).body_limit}
    assert limited == {"/v1/tables/{name}/weights": "max_weights_body_bytes"}
    assert Settings(memory_budget_bytes=12345).max_weights_body_bytes == 12345  # 0: the budget
    assert Settings(max_weights_body_bytes=99).max_weights_body_bytes == 99


def test_auth_and_idempotency_are_not_there_when_unused(
    make_app: Callable[..., FastAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(idempotency_max_keys=0)
    stack = app.build_middleware_stack()
    assert isinstance(stack, ServiceMiddleware)
    assert stack.auth is None and stack.idempotency is None
    assert isinstance(make_app().build_middleware_stack().idempotency, Idempotency)

    async def never(*args: Any) -> None:
        raise AssertionError("a request without a key reached the idempotency keys")

    monkeypatch.setattr(Idempotency, "serve", never)
    with TestClient(make_app()) as client:
        assert client.post("/v1/tables", json=TABLE).status_code == 201
        assert client.post("/v1/tables/words/lookup", content=codecs.to_npy(np.array([1])),
                           headers=NPY).status_code == 200
        assert client.post("/v1/tables/words/gradients", json={
            "ids": [1], "grads": [[1, 1, 1]]}).status_code == 200


def test_no_log_line_is_made_at_a_level_that_is_off(
    make_app: Callable[..., FastAPI], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    made: list[str] = []
    log = RequestObserver._log
    monkeypatch.setattr(RequestObserver, "_log", staticmethod(
        lambda scope, resolved, method, *rest: made.append(method) or log(
            scope, resolved, method, *rest)))
    app = make_app(log_level="warning")
    with TestClient(app) as client:
        client.get("/healthz")
    assert made == []
    caplog.set_level(logging.INFO, logger="service.access")
    with TestClient(make_app(log_level="info")) as client:
        client.get("/healthz")
        client.post("/v1/tables", json=TABLE)
    assert made == ["GET", "POST"]
    assert [record.fields["status"] for record in caplog.records
            if record.name == "service.access"] == [200, 201]


def test_metric_series_are_bound_once_per_label_set(
    make_app: Callable[..., FastAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    bound: list[tuple[str, ...]] = []
    labels = prometheus_client.metrics.MetricWrapperBase.labels

    def counting(self: Any, *values: str, **named: str) -> Any:
        if self._name.startswith("embed_http_request"):
            bound.append(values)
        return labels(self, *values, **named)

    monkeypatch.setattr(prometheus_client.metrics.MetricWrapperBase, "labels", counting)
    with TestClient(make_app()) as client:
        for _ in range(20):
            client.get("/healthz")
        metrics = client.get("/metrics").text
    healthz = [values for values in bound if values[1] == "/healthz"]
    assert healthz == [("GET", "/healthz", "200")] * 2  # the counter's and the histogram's
    assert 'embed_http_requests_total{method="GET",route="/healthz",status="200"} 20.0' in metrics


@pytest.mark.parametrize("fast", [True, False], ids=["fast path", "FastAPI route"])
def test_an_unexpected_error_is_a_500_counted_and_raised_on(
    make_app: Callable[..., FastAPI], monkeypatch: pytest.MonkeyPatch, fast: bool
) -> None:
    """What Starlette's ServerErrorMiddleware did in front of the app: a plain 500 reply, and
    the exception raised on for the server to log (uvicorn does)."""

    async def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    policy = getattr(operations.lookup, POLICY_ATTRIBUTE)
    monkeypatch.setattr(operations.lookup, POLICY_ATTRIBUTE, dataclasses.replace(
        policy, binary=broken))
    monkeypatch.setattr(operations.handlers, "lookup", broken)
    app = make_app(binary_fast_path=fast)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.post("/v1/tables", json=TABLE).raise_for_status()
        reply = client.post("/v1/tables/words/lookup", content=codecs.to_npy(np.array([1])),
                            headers=NPY)
        metrics = client.get("/metrics").text
    assert (reply.status_code, reply.text) == (500, "Internal Server Error")
    assert reply.headers["content-type"].startswith("text/plain")
    assert ('embed_http_requests_total{method="POST",route="/v1/tables/{name}/lookup",'
            'status="500"} 1.0') in metrics
    with TestClient(make_app(binary_fast_path=fast)) as client, \
            pytest.raises(RuntimeError, match="a bug"):
        client.post("/v1/tables", json=TABLE).raise_for_status()
        client.post("/v1/tables/words/lookup", content=codecs.to_npy(np.array([1])),
                    headers=NPY)


def test_behind_a_root_path_routes_and_open_paths_hold(make_app: Callable[..., FastAPI]) -> None:
    with TestClient(make_app(token="secret"), root_path="/api") as client:
        assert client.get("/api/healthz").status_code == 200
        assert client.get("/api/v1/tables").status_code == 401
        assert client.get("/api/v1/tables",
                          headers={"Authorization": "Bearer secret"}).status_code == 200
