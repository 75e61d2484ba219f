"""One structured (JSON) log line per request: method, route template, status, duration, table,
rows; the level comes from EMBED_LOG_LEVEL."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.testclient import TestClient

from service.api.logs import JsonLines
from service.api.settings import Settings
from tests.conftest import LiveServer


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict]:
    return [dict(record.fields) for record in caplog.records
            if record.name == "service.access"]


def without_duration(line: dict) -> dict:
    assert isinstance(line.pop("duration_ms"), float)
    return line


def test_one_line_per_request(make_app: Callable[..., FastAPI],
                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="service.access")
    with TestClient(make_app()) as client:
        client.post("/v1/tables", json={"name": "words", "num_embeddings": 10,
                                        "embedding_dim": 2})
        caplog.clear()
        client.post("/v1/tables/words/lookup", json={"ids": [[1, 2, 3], [4, 5, 6]]})
        client.post("/v1/tables/words/gradients", json={"ids": [1, 1], "grads": [[1, 1]] * 2})
        client.post("/v1/tables/words/apply")
        client.post("/v1/tables/words/lookup", json={"ids": [99]})
        client.get("/v1/tables/nowhere")
        client.get("/healthz")
    lines = [without_duration(line) for line in access_lines(caplog)]
    lookup = "/v1/tables/{name}/lookup"
    assert lines == [
        {"event": "request", "method": "POST", "route": lookup, "status": 200,
         "table": "words", "rows": 6},
        {"event": "request", "method": "POST", "route": "/v1/tables/{name}/gradients",
         "status": 200, "table": "words", "rows": 2},
        {"event": "request", "method": "POST", "route": "/v1/tables/{name}/apply",
         "status": 200, "table": "words", "rows": 1},
        {"event": "request", "method": "POST", "route": lookup, "status": 422,
         "table": "words", "rows": 1},
        {"event": "request", "method": "GET", "route": "/v1/tables/{name}", "status": 404,
         "table": "nowhere"},
        {"event": "request", "method": "GET", "route": "/healthz", "status": 200},
    ]


def test_refusals_are_logged_too(make_app: Callable[..., FastAPI],
                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="service.access")
    with TestClient(make_app(token="secret", max_body_bytes=10)) as client:
        client.post("/v1/tables/words/lookup", json={"ids": [1]})
        client.post("/v1/tables/words/lookup", content=b"x" * 11,
                    headers={"Authorization": "Bearer secret"})
    statuses = [(line["route"], line["status"], line.get("table"))
                for line in access_lines(caplog)]
    assert statuses == [("/v1/tables/{name}/lookup", 401, "words"),
                        ("/v1/tables/{name}/lookup", 413, "words")]


def test_the_level_is_configurable(make_app: Callable[..., FastAPI],
                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    app = make_app(log_level="WARNING")
    assert logging.getLogger("service").level == logging.WARNING
    logging.getLogger("service").setLevel(logging.WARNING)
    caplog.handler.setLevel(logging.DEBUG)
    with TestClient(app) as client:
        client.get("/healthz")
    assert access_lines(caplog) == []
    make_app(log_level="info")
    assert logging.getLogger("service").level == logging.INFO


def test_a_wrong_level_names_the_setting() -> None:
    with pytest.raises(ValidationError, match="log_level"):
        Settings(log_level="loud")


def test_lines_are_json() -> None:
    record = logging.LogRecord("service.access", logging.INFO, __file__, 1, "GET /healthz 200",
                               None, None)
    record.fields = {"event": "request", "route": "/healthz", "status": 200}
    line = json.loads(JsonLines().format(record))
    assert line["level"] == "info" and line["logger"] == "service.access"
    assert line["route"] == "/healthz" and line["status"] == 200
    assert line["time"].endswith("Z")
    plain = logging.LogRecord("service", logging.WARNING, __file__, 1, "disk %s", ("full",),
                              None)
    assert json.loads(JsonLines().format(plain))["message"] == "disk full"


def test_the_time_is_the_records_own_to_the_millisecond() -> None:
    """The formatter writes the part up to the second once a second; every stamp is still
    datetime's own ISO 8601 of the record's time (same rounding), across seconds, backwards."""
    import random
    from datetime import UTC, datetime

    formatter = JsonLines()
    rng = random.Random(0)
    times = [rng.uniform(-1e9, 2e9) for _ in range(20_000)]
    times += [1.7e9 + rng.randrange(10**6) / 1e6 for _ in range(20_000)]  # sub-ms edges
    times += [1.7e9 + 0.9999995, 1.7e9 - 0.0000004, 0.0, -0.5]
    for created in times:
        expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        assert formatter.stamp(created) == expected.replace("+00:00", "Z"), created


@pytest.mark.e2e
def test_uvicorn_writes_json_access_lines(live_server: LiveServer, table_name: str) -> None:
    with httpx.Client(base_url=live_server.url, timeout=30.0) as client:
        client.post("/v1/tables", json={"name": table_name, "num_embeddings": 5,
                                        "embedding_dim": 2}).raise_for_status()
        client.post(f"/v1/tables/{table_name}/lookup", json={"ids": [0, 1, 2]})
    deadline = time.monotonic() + 10  # the line is written just after the reply is sent
    while time.monotonic() < deadline:
        mine = [json.loads(line) for line in live_server.output().splitlines()
                if f'"table":"{table_name}"' in line and '"route"' in line]
        if mine:
            break
        time.sleep(0.05)
    assert [(line["route"], line["status"], line["rows"]) for line in mine] == [
        ("/v1/tables/{name}/lookup", 200, 3)]
    assert mine[0]["method"] == "POST" and mine[0]["duration_ms"] > 0


# -- a client that goes away mid-upload is not a server error ---------------------------------
@pytest.mark.parametrize(("path", "content_type"), [
    ("/v1/tables/words/gradients", "application/x-npy"),  # the binary fast path
    ("/v1/tables/words/gradients", "application/json"),  # a FastAPI route reading the body
    ("/v1/tables", "application/json"),  # FastAPI parsing a pydantic body
])
def test_a_client_that_disconnects_mid_upload_is_a_499(
    make_app: Callable[..., FastAPI], caplog: pytest.LogCaptureFixture, path: str,
    content_type: str,
) -> None:
    import anyio

    app = make_app()
    caplog.set_level(logging.INFO, logger="service.access")
    with TestClient(app) as client:
        client.post("/v1/tables", json={"name": "words", "num_embeddings": 4,
                                        "embedding_dim": 2}).raise_for_status()
        caplog.clear()
        messages = iter([{"type": "http.request", "body": b"{\"ids\"", "more_body": True},
                         {"type": "http.disconnect"}])
        sent: list[dict] = []

        async def receive() -> dict:
            return next(messages)

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
                 "root_path": "", "query_string": b"", "server": ("testserver", 80),
                 "client": ("127.0.0.1", 1), "headers": [(b"content-type", content_type.encode()),
                                                         (b"content-length", b"100")]}
        anyio.run(app, scope, receive, send)  # no exception comes out of the app
        statuses = [without_duration(line)["status"] for line in access_lines(caplog)]
        metrics = client.get("/metrics").text
    assert sent == []  # nobody to answer
    assert statuses == [499]
    route = "/v1/tables" if path == "/v1/tables" else "/v1/tables/{name}/gradients"
    assert (f'embed_http_requests_total{{method="POST",route="{route}",status="499"}} 1.0'
            in metrics)
    assert 'status="500"' not in metrics
