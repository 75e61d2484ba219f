"""/metrics: request counts by route template and status, rows by table, table gauges computed
at scrape time, snapshot timings; labels never carry ids or values."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from service.api.metrics import metrics_of

ALLOWED_LABELS = {"method", "route", "status", "table", "operation", "le"}


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def client(make_app: Callable[..., FastAPI]) -> Iterator[TestClient]:
    with TestClient(make_app()) as client:
        client.post("/v1/tables", json={"name": "words", "num_embeddings": 100,
                                        "embedding_dim": 4, "dtype": "float64"}).raise_for_status()
        yield client


def test_rows_by_table(client: TestClient) -> None:
    for _ in range(3):
        client.post("/v1/tables/words/lookup", json={"ids": [[1, 2], [3, 3], [42, 99]]})
    client.post("/v1/tables/words/gradients", json={"ids": [5, 5, 6], "grads": [[1] * 4] * 3})
    client.post("/v1/tables/words/gradients", json={"ids": [7], "grads": [[1] * 4]})
    client.post("/v1/tables/words/apply")
    client.post("/v1/tables/words/gradients", json={"ids": [8, 9], "grads": [[1] * 4] * 2,
                                                    "apply": True})
    client.post("/v1/tables/words/gradients", json={"ids": [10], "grads": [[1] * 4]})
    samples = scrape(client)
    assert value(samples, "embed_rows_looked_up_total", table="words") == 18
    assert value(samples, "embed_rows_pushed_total", table="words") == 7
    assert value(samples, "embed_rows_updated_total", table="words") == 3 + 2
    assert value(samples, "embed_table_pending_rows", table="words") == 1
    assert value(samples, "embed_table_step", table="words") == 2
    table = client.get("/v1/tables/words").json()
    assert value(samples, "embed_table_bytes", table="words") == table["nbytes"]
    assert value(samples, "embed_tables") == 1


def test_requests_by_route_template_and_status(client: TestClient) -> None:
    client.post("/v1/tables/words/lookup", json={"ids": [1]})
    client.post("/v1/tables/words/lookup", json={"ids": [1000]})
    client.post("/v1/tables/nowhere/lookup", json={"ids": [1]})
    client.get("/no/such/path")
    samples = scrape(client)
    route = "/v1/tables/{name}/lookup"
    ok = value(samples, "embed_http_requests_total", method="POST", route=route, status="200")
    assert ok == 1
    assert value(samples, "embed_http_requests_total", method="POST", route=route,
                 status="422") == 1
    assert value(samples, "embed_http_requests_total", method="POST", route=route,
                 status="404") == 1
    assert value(samples, "embed_http_requests_total", method="GET", route="<unmatched>",
                 status="404") == 1
    assert value(samples, "embed_http_request_duration_seconds_count", method="POST",
                 route=route, status="200") == 1
    assert value(samples, "embed_http_requests_total", method="POST", route="/v1/tables",
                 status="201") == 1


def test_labels_never_hold_ids_or_raw_paths(client: TestClient) -> None:
    client.post("/v1/tables/words/lookup", json={"ids": [31337 % 100]})
    client.post("/v1/tables/words/gradients", json={"ids": [77], "grads": [[0.125] * 4]})
    client.get("/v1/tables/some-raw-path-segment")
    samples = scrape(client)
    for name, labels in samples:
        keys = {key for key, _ in labels}
        assert keys <= ALLOWED_LABELS, (name, labels)
        for key, label_value in labels:
            if key == "route":
                assert label_value == "<unmatched>" or label_value.startswith("/")
                assert "some-raw-path-segment" not in label_value and "words" not in label_value
            if key == "table":
                assert label_value == "words"


def test_made_up_methods_share_one_label(client: TestClient) -> None:
    for index in range(5):
        client.request(f"BREW{index}", "/v1/tables/words")
    samples = scrape(client)
    methods = {dict(labels).get("method") for _, labels in samples} - {None}
    assert methods == {"POST", "other"}  # the fixture's create, and the made-up ones
    assert value(samples, "embed_http_requests_total", method="other",
                 route="/v1/tables/{name}", status="405") == 5


def test_deleted_tables_leave_no_series(client: TestClient) -> None:
    client.post("/v1/tables/words/lookup", json={"ids": [1]})
    client.delete("/v1/tables/words")
    samples = scrape(client)
    assert not [key for key in samples if ("table", "words") in key[1]]
    assert value(samples, "embed_tables") == 0


def test_refused_requests_count_under_their_route(make_app: Callable[..., FastAPI]) -> None:
    with TestClient(make_app(token="t", max_body_bytes=100)) as client:
        client.post("/v1/tables/words/lookup", json={"ids": [1]})
        client.post("/v1/tables/words/lookup", content=b"x" * 200, headers={"Authorization":
                                                                            "Bearer t"})
        samples = scrape(client)
    route = "/v1/tables/{name}/lookup"
    assert value(samples, "embed_http_requests_total", method="POST", route=route,
                 status="401") == 1
    assert value(samples, "embed_http_requests_total", method="POST", route=route,
                 status="413") == 1


def test_snapshot_timings_and_failures(make_app: Callable[..., FastAPI]) -> None:
    app = make_app()
    metrics = metrics_of(app)
    with metrics.time_snapshot("save"):
        pass
    with pytest.raises(OSError), metrics.time_snapshot("save"):
        raise OSError("disk full")
    with TestClient(app) as client:
        samples = scrape(client)
    assert value(samples, "embed_snapshot_duration_seconds_count", operation="save") == 2
    assert value(samples, "embed_snapshot_failures_total", operation="save") == 1


def test_apps_do_not_share_metrics(make_app: Callable[..., FastAPI]) -> None:
    with TestClient(make_app()) as first, TestClient(make_app()) as second:
        first.get("/healthz")
        first.get("/healthz")
        second.get("/healthz")
        one, two = scrape(first), scrape(second)
    labels = {"method": "GET", "route": "/healthz", "status": "200"}
    assert value(one, "embed_http_requests_total", **labels) == 2
    assert value(two, "embed_http_requests_total", **labels) == 1


def test_process_memory_is_exported(client: TestClient) -> None:
    assert value(scrape(client), "process_resident_memory_bytes") > 0
