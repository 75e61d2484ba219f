"""Small helpers for API tests: .npy/.npz bodies and table snapshots for "nothing changed"."""

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


def create(api: httpx.Client, name: str, **spec: Any) -> dict[str, Any]:
    body = {"name": name, "num_embeddings": 10, "embedding_dim": 4, "seed": 0, **spec}
    reply = api.post("/v1/tables", json=body)
    assert reply.status_code == 201, reply.text
    return reply.json()


def weights_of(api: httpx.Client, name: str) -> np.ndarray:
    """The whole table, read through lookup."""
    info = api.get(f"/v1/tables/{name}").json()
    ids = np.arange(info["num_embeddings"])
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
