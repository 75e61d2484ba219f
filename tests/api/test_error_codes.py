"""X-Error-Code: a machine-readable name for each error reply, beside the {"detail"} sentence,
so clients can tell apart errors that share a status (409: table_exists, stale_gradient)."""

from __future__ import annotations

import httpx
import numpy as np

from service.api.errors import PayloadTooLarge, error_code
from service.core.errors import BudgetExceeded, StaleGradient, TableExists, TableNotFound
from tests.api.helpers import NPZ, create, npz_bytes


def test_error_code_is_the_class_name_in_snake_case() -> None:
    assert error_code(TableNotFound("a")) == "table_not_found"
    assert error_code(TableExists("a")) == "table_exists"
    assert error_code(StaleGradient("old")) == "stale_gradient"
    assert error_code(BudgetExceeded("big")) == "budget_exceeded"
    assert error_code(PayloadTooLarge("big")) == "payload_too_large"


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
