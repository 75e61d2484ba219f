from __future__ import annotations

import httpx


def test_healthz(api: httpx.Client) -> None:
    reply = api.get("/healthz")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok"}
