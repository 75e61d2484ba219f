"""X-Error-Code: a machine-readable name for each error reply, beside the {"detail"} sentence,
so clients can tell apart errors that share a status (409: table_exists, stale_gradient).

Each error class states its status and code; the codes are a wire contract (clients in the field
branch on them), so the whole table is pinned here, docs/api.md lists it, and every error reply
of the bad-input suite (tests/api/test_bad_input.py) must carry a code of it with its status."""

from __future__ import annotations

import gc
import re
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from service.api.errors import error_classes, service_error_reply, wire_codes
from service.core.errors import EmbeddingServiceError, InvalidRequest
from tests.api.helpers import NPZ, create, npz_bytes
from tests.conftest import ROOT

# The codes sent today, with their statuses. A code never changes once clients have seen it:
# a new kind of error adds a row (and a row in docs/api.md and in the client's ERROR_OF_CODE).
WIRE_CODES = {
    "table_not_found": 404,
    "table_exists": 409,
    "stale_gradient": 409,
    "invalid_request": 422,
    "invalid_idempotency_key": 422,
    "idempotency_key_reused": 422,
    "unsupported_media_type": 415,
    "not_acceptable": 406,
    "unauthorized": 401,
    "payload_too_large": 413,
    "budget_exceeded": 413,
    "storage_error": 503,
    "snapshot_damaged": 503,
    "request_timeout": 408,
    "too_many_connections": 503,
    "shard_unavailable": 503,
    "shard_map_changed": 421,
    "not_found": 404,
    "method_not_allowed": 405,
}


def test_the_codes_are_the_wire_contract() -> None:
    assert wire_codes() == WIRE_CODES


def test_every_class_states_its_own_status_and_code() -> None:
    classes = error_classes()
    assert len(classes) >= 13
    for cls in classes:
        assert "status_code" in vars(cls) and "code" in vars(cls), cls
        assert 400 <= cls.status_code < 600 and re.fullmatch(r"[a-z]+(_[a-z]+)*", cls.code)
    assert len({cls.code for cls in classes}) == len(classes)  # one class per code


def test_a_class_without_its_status_or_code_is_refused_when_defined() -> None:
    """Not a silent 400 at run time: the class cannot be made."""
    with pytest.raises(TypeError, match="Forgetful must state its own status_code"):
        class Forgetful(InvalidRequest):  # inheriting the parent's would be a guess
            code = "forgetful"
    with pytest.raises(TypeError, match="must state its own status_code and code"):
        class Bare(EmbeddingServiceError):
            pass
    gc.collect()  # the refused classes were made before being refused: gone from the hierarchy
    assert {cls.__name__ for cls in error_classes()}.isdisjoint({"Forgetful", "Bare"})


def test_the_reply_is_the_class_s_status_code_and_sentence() -> None:
    for cls in error_classes():
        error = cls.__new__(cls)
        EmbeddingServiceError.__init__(error, "what went wrong, named")
        reply = service_error_reply(error, {"Connection": "close"})
        assert reply.status_code == cls.status_code
        assert reply.headers["x-error-code"] == cls.code
        assert reply.headers["connection"] == "close"
        assert reply.body == b'{"detail":"what went wrong, named"}'


def test_middleware_refusals_carry_their_code(make_app: Callable[..., FastAPI]) -> None:
    """Refused before a route runs (auth, body limits, idempotency keys): the same replies."""
    with TestClient(make_app(token="s3cret", max_body_bytes=1000)) as client:
        denied = client.get("/v1/tables")
        assert (denied.status_code, denied.headers["x-error-code"]) == (401, "unauthorized")
        assert denied.headers["www-authenticate"] == 'Bearer realm="embedding-service"'
        auth = {"Authorization": "Bearer s3cret"}
        declared = client.post("/v1/tables", content=b"[" * 1001, headers=auth)
        assert (declared.status_code, declared.headers["x-error-code"]) == (
            413, "payload_too_large")
        assert declared.headers["connection"] == "close"
        chunked = client.post("/v1/tables", content=iter([b" " * 600] * 3), headers=auth)
        assert (chunked.status_code, chunked.headers["x-error-code"]) == (
            413, "payload_too_large")
        bad_key = client.post("/v1/snapshots", headers={**auth, "Idempotency-Key": ""})
        assert (bad_key.status_code, bad_key.headers["x-error-code"]) == (
            422, "invalid_idempotency_key")
        assert bad_key.json()["detail"].startswith("Idempotency-Key must be 1-255 printable")


def test_replies_carry_the_code(api: httpx.Client, table_name: str) -> None:
    missing = api.get(f"/v1/tables/{table_name}")
    assert (missing.status_code, missing.headers["x-error-code"]) == (404, "table_not_found")
    assert missing.json() == {"detail": f"table {table_name!r} does not exist"}

    create(api, table_name, max_staleness=0)
    again = api.post("/v1/tables", json={"name": table_name, "num_embeddings": 1,
                                         "embedding_dim": 1})
    assert (again.status_code, again.headers["x-error-code"]) == (409, "table_exists")

    body = npz_bytes(ids=np.array([0]), grads=np.ones((1, 4)))
    api.post(f"/v1/tables/{table_name}/gradients?apply=true", content=body, headers=NPZ)
    stale = api.post(f"/v1/tables/{table_name}/gradients?step=0", content=body, headers=NPZ)
    assert (stale.status_code, stale.headers["x-error-code"]) == (409, "stale_gradient")

    invalid = api.post("/v1/tables", json={"name": table_name + "x", "num_embeddings": 0,
                                           "embedding_dim": 1})
    assert (invalid.status_code, invalid.headers["x-error-code"]) == (422, "invalid_request")
    unknown = api.get("/v1/nothing-here")
    assert (unknown.status_code, unknown.headers["x-error-code"]) == (404, "not_found")


def test_the_docs_list_every_code_with_its_status() -> None:
    page = (ROOT / "docs" / "api.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \|", page, flags=re.MULTILINE))
    assert {code: int(status) for code, status in rows.items()} == WIRE_CODES
