"""Bearer-token auth: every /v1 route refuses a request without the right token and serves one
with it; /healthz, /metrics and the API docs stay open."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from service.api import codecs
from service.api.middleware.routes import RouteTable
from tests.conftest import LiveServer

TOKEN = "correct horse battery staple"
GOOD = {"Authorization": f"Bearer {TOKEN}"}
TABLE = {"name": "words", "num_embeddings": 10, "embedding_dim": 3, "init": {"kind": "zeros"}}


@pytest.fixture
def app(make_app: Callable[..., FastAPI]) -> FastAPI:
    return make_app(token=TOKEN)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def all_routes(app: FastAPI) -> list[Any]:
    """Every route of the app, routers included (FastAPI >= 0.13x includes them lazily)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: included routes are plain entries of app.routes
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def every_route(app: FastAPI) -> list[tuple[str, str]]:
    """(method, concrete path) of every route of the app, path parameters filled in."""
    found = []
    for route in all_routes(app):
        assert isinstance(route.path, str), f"unexpected route kind {route!r}"
        # a table name, or for the API pages' and /ui's assets one of their files
        path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: {"path": "swagger-ui.css",
                                                      "file": "app.js"}.get(m[1], "words"),
                      route.path)
        for method in sorted(route.methods or {"GET"}):
            if method != "HEAD":
                found.append((method, path))
    return found


def requires_token(app: FastAPI, method: str, path: str) -> bool:
    """Whether the app's routes ask a token of this request (a route marked open does not)."""
    return not RouteTable(app.router.routes).resolve_path(method, path).policy.open


def test_every_v1_route_needs_the_token(app: FastAPI) -> None:
    """A route another module adds later is covered too: nothing under /v1 may be open."""
    v1 = [(method, path) for method, path in every_route(app) if path.startswith("/v1")]
    assert len({path for _, path in v1}) >= 5
    assert all(requires_token(app, method, path) for method, path in v1)
    open_paths = RouteTable(app.router.routes).open_paths()
    assert {"/healthz", "/metrics", "/openapi.json", "/docs", "/redoc"} <= set(open_paths)
    assert not any(path.startswith("/v1") for path in open_paths)
    assert requires_token(app, "GET", "/anything-no-route-serves")


@pytest.mark.parametrize(
    "headers, problem",
    [
        ({}, "Authorization header is missing"),
        ({"Authorization": TOKEN}, "must be 'Bearer <token>'"),
        ({"Authorization": f"Basic {TOKEN}"}, "must be 'Bearer <token>'"),
        ({"Authorization": "Bearer "}, "must be 'Bearer <token>'"),
        ({"Authorization": "Bearer wrong"}, "token is not valid"),
        ({"Authorization": f"Bearer {TOKEN}x"}, "token is not valid"),
        ({"Authorization": f"Bearer {TOKEN[:-1]}"}, "token is not valid"),
    ],
)
def test_every_route_refuses_without_the_right_token(
    app: FastAPI, client: TestClient, headers: dict[str, str], problem: str
) -> None:
    client.post("/v1/tables", json=TABLE, headers=GOOD).raise_for_status()
    weights_before = client.post("/v1/tables/words/lookup", json={"ids": list(range(10))},
                                 headers=GOOD).json()["vectors"]
    for method, path in every_route(app):
        reply = client.request(method, path, headers=headers, json={"ids": [1], "grads": [[1] * 3]})
        if requires_token(app, method, path):
            assert reply.status_code == 401, (method, path, reply.text)
            assert problem in reply.json()["detail"], (method, path)
            assert reply.headers["www-authenticate"].startswith("Bearer")
        else:
            assert reply.status_code == 200, (method, path, reply.text)
    # nothing changed: the table is still there, untouched
    after = client.post("/v1/tables/words/lookup", json={"ids": list(range(10))}, headers=GOOD)
    assert after.json()["vectors"] == weights_before
    assert client.get("/v1/tables/words", headers=GOOD).json()["step"] == 0


def test_unknown_paths_and_bodies_are_refused_before_reading(client: TestClient) -> None:
    assert client.get("/v1/nothing-here").status_code == 401
    assert client.get("/anything").status_code == 401
    assert client.post("/v1/tables/words/lookup", content=b"x" * 10_000).status_code == 401


def test_every_route_works_with_the_token(app: FastAPI, client: TestClient) -> None:
    created = client.post("/v1/tables", json=TABLE, headers=GOOD)
    assert created.status_code == 201
    assert client.get("/v1/tables", headers=GOOD).json()["tables"][0]["name"] == "words"
    assert client.get("/v1/tables/words", headers=GOOD).json()["num_embeddings"] == 10
    lookup = client.post("/v1/tables/words/lookup", json={"ids": [1, 2]}, headers=GOOD)
    assert lookup.json()["vectors"] == [[0.0] * 3] * 2
    binary = client.post("/v1/tables/words/lookup", content=codecs.to_npy(np.array([3])),
                         headers={**GOOD, "Content-Type": codecs.NPY})
    assert codecs.parse_npy(binary.content).tolist() == [[0.0] * 3]
    push = client.post("/v1/tables/words/gradients", json={"ids": [1], "grads": [[1, 2, 3]]},
                       headers=GOOD)
    assert push.json()["pending_rows"] == 1
    apply = client.post("/v1/tables/words/apply", json={"lr": 1.0}, headers=GOOD)
    assert apply.json() == {"step": 1, "rows_updated": 1}
    after = client.post("/v1/tables/words/lookup", json={"ids": [1]}, headers=GOOD)
    assert after.json()["vectors"] == [[-1.0, -2.0, -3.0]]
    # routes this test does not know (added by other modules): the token gets past auth
    for method, path in every_route(app):
        if requires_token(app, method, path):
            reply = client.request(method, path, headers=GOOD)
            assert reply.status_code != 401, (method, path)
    assert client.get("/v1/tables", headers=GOOD).json() == {"tables": []}  # DELETE ran


def test_the_scheme_name_is_case_insensitive(client: TestClient) -> None:
    reply = client.get("/v1/tables", headers={"Authorization": f"bearer {TOKEN}"})
    assert reply.status_code == 200


def test_openapi_documents_the_bearer_scheme(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    lookup = schema["paths"]["/v1/tables/{name}/lookup"]["post"]
    assert lookup["security"] == [{"bearer": []}]
    assert "401" in lookup["responses"]
    assert "security" not in schema["paths"]["/healthz"]["get"]


def test_without_a_token_nothing_is_required(make_app: Callable[..., FastAPI]) -> None:
    with TestClient(make_app()) as client:
        assert client.get("/v1/tables").status_code == 200
        assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})


def test_a_blank_token_counts_as_none(make_app: Callable[..., FastAPI]) -> None:
    with TestClient(make_app(token="  ")) as client:
        assert client.get("/v1/tables").status_code == 200


@pytest.mark.e2e
def test_uvicorn_with_a_token() -> None:
    server = LiveServer(env={"EMBED_TOKEN": TOKEN}).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            assert client.get("/healthz").status_code == 200
            assert client.get("/metrics").status_code == 200
            assert client.get("/v1/tables").status_code == 401
            assert client.get("/v1/tables", headers=GOOD).json() == {"tables": []}
    finally:
        server.stop()
    assert "unauthenticated" not in server.output()


@pytest.mark.e2e
def test_uvicorn_without_a_token_warns_at_start(live_server: LiveServer) -> None:
    warnings = [line for line in live_server.output().splitlines() if "unauthenticated" in line]
    assert len(warnings) == 1
    assert '"level":"warning"' in warnings[0]


def status_of_raw_path(app: FastAPI, path: str) -> int:
    """The status the app answers a GET of `path` exactly as sent (HTTP clients, TestClient
    included, would collapse the dot segments first; uvicorn passes them through)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"", "headers": [], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80)}
    anyio.run(app, scope, receive, send)
    return int(sent[0]["status"])


@pytest.mark.parametrize("path", ["/docs/assets/../v1/tables", "/docs/assets/../../v1/tables",
                                  "/docs/assets/%2e%2e/v1/tables"])
def test_the_open_asset_prefix_reaches_no_protected_route(app: FastAPI, path: str) -> None:
    """/docs/assets/ is open; a path that walks out of it must not reach a /v1 route."""
    assert status_of_raw_path(app, "/v1/tables") == 401
    assert status_of_raw_path(app, path) == 404
