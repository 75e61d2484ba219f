"""`make serve` logs each request once: the service's own JSON access line, and no line of
uvicorn's access log beside it (python -m service.api turns that off)."""

from __future__ import annotations

import json

import httpx
import pytest

from service.api.process import ServiceProcess

pytestmark = pytest.mark.e2e


def test_one_request_is_one_log_line() -> None:
    service = ServiceProcess()
    try:
        with service:
            httpx.post(f"{service.url}/v1/tables", json={"name": "logged", "num_embeddings": 4,
                                                         "embedding_dim": 2}).raise_for_status()
            httpx.post(f"{service.url}/v1/tables/logged/lookup",
                       json={"ids": [1, 3]}).raise_for_status()
        lines = service.output().splitlines()
    finally:
        service.log_path.unlink(missing_ok=True)

    about_the_lookup = [line for line in lines if "lookup" in line]
    assert len(about_the_lookup) == 1, "\n".join(about_the_lookup)
    record = json.loads(about_the_lookup[0])
    assert {key: record[key] for key in ("logger", "method", "route", "status", "table", "rows")} \
        == {"logger": "service.access", "method": "POST", "route": "/v1/tables/{name}/lookup",
            "status": 200, "table": "logged", "rows": 2}
    loggers = {json.loads(line)["logger"] for line in lines}
    assert "uvicorn.access" not in loggers
