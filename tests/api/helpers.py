"""Small helpers for API tests: .npy/.npz bodies, tables of either kind and table snapshots for
"nothing changed".

`create` makes a fixed table, or a dynamic one while TABLE_KIND is "dynamic" (the `table_kind`
fixture of tests/conftest.py sets it: a test that applies to both kinds of table runs once for
each). A dynamic table made in place of a fixed table of n rows has default settings (every
key admitted at once, no capacity, no ttl), so ids 0..n-1 behave as the fixed table's rows do:
the same lookups, pushes and steps, from the dynamic table's own initial rows.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import httpx
import numpy as np

NPY = {"content-type": "application/x-npy"}
NPZ = {"content-type": "application/x-npz"}


def npy_bytes(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array, allow_pickle=False)
    return stream.getvalue()


def npz_bytes(**arrays: Any) -> bytes:
    stream = io.BytesIO()
    np.savez(stream, **arrays)
    return stream.getvalue()


def load_npy(content: bytes) -> np.ndarray:
    return np.load(io.BytesIO(content), allow_pickle=False)


TABLE_KIND = "fixed"  # what `create` makes: "fixed" or "dynamic" (fixture table_kind)
VOCABULARY: dict[str, int] = {}  # dynamic tables made by create(): the ids 0..n-1 tests use


def create(api: httpx.Client, name: str, **spec: Any) -> dict[str, Any]:
    body = {"name": name, "num_embeddings": 10, "embedding_dim": 4, "seed": 0, **spec}
    if TABLE_KIND == "dynamic" or "dynamic" in spec:
        VOCABULARY[name] = body.pop("num_embeddings")
        body.setdefault("dynamic", {})
    reply = api.post("/v1/tables", json=body)
    assert reply.status_code == 201, reply.text
    return reply.json()


def push_reply(rows: int, pending_rows: int, step: int, rows_updated: int = 0
               ) -> dict[str, int]:
    """A push's reply as the service sends it (a dynamic table's counts dropped rows too)."""
    reply = {"rows": rows, "pending_rows": pending_rows, "step": step,
             "rows_updated": rows_updated}
    return {**reply, "dropped_rows": 0} if TABLE_KIND == "dynamic" else reply


def weights_of(api: httpx.Client, name: str) -> np.ndarray:
    """The whole table (a dynamic table: ids 0..n-1 of the n it was created for), read through
    lookup; a dynamic table create() did not make: its keys (their bits) and rows, exported."""
    info = api.get(f"/v1/tables/{name}").json()
    if info["num_embeddings"] is None and name not in VOCABULARY:  # made elsewhere: its rows
        exported = api.get(f"/v1/tables/{name}/weights")
        assert exported.status_code == 200, exported.text
        arrays = np.load(io.BytesIO(exported.content))
        return np.concatenate([arrays["ids"].view(np.float64)[:, None], arrays["weights"]],
                              axis=1)
    ids = np.arange(info["num_embeddings"] or VOCABULARY[name])
    reply = api.post(f"/v1/tables/{name}/lookup", content=npy_bytes(ids), headers=NPY)
    assert reply.status_code == 200, reply.text
    return load_npy(reply.content)


def fingerprint(api: httpx.Client) -> dict[str, tuple[str, int, int]]:
    """Per table: a hash of its weights, its step and its pending rows."""
    tables = api.get("/v1/tables").json()["tables"]
    return {
        t["name"]: (hashlib.sha256(weights_of(api, t["name"]).tobytes()).hexdigest(),
                    t["step"], t["pending_rows"])
        for t in tables
    }


INDEX_BYTES_PER_ID = 64  # cluster mode: a shard's key index (id -> row) holds under this an id


def assert_table_bytes(info: dict[str, Any], table_bytes: int) -> None:
    """TableInfo's nbytes is `table_bytes` (weights, optimizer state, pending...); a table of
    a cluster-mode service holds its shards' key indexes besides, under 64 bytes an id."""
    if info.get("shards", 1) == 1:
        assert info["nbytes"] == table_bytes
    else:
        assert table_bytes < info["nbytes"] <= (table_bytes
                                                + INDEX_BYTES_PER_ID * info["num_embeddings"])
