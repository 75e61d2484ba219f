"""lookup / gradients / apply over HTTP, checked against the reference layer: on a fixed table
and on a dynamic one (ids 0..n-1 of a dynamic table behave as a fixed table's rows)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.api.helpers import (
    NPY,
    NPZ,
    create,
    load_npy,
    npy_bytes,
    npz_bytes,
    push_reply,
    weights_of,
)
from tests.reference import ReferenceEmbedding

pytestmark = pytest.mark.usefixtures("table_kind")


@pytest.mark.parametrize("ids", [3, [1, 2, 2], [[0, 1], [9, 9]], [[[5]]], []],
                         ids=["scalar", "list", "2-d", "3-d", "empty"])
def test_lookup_json_has_the_shape_of_ids_plus_dim(api: httpx.Client, table_name: str, ids) -> None:
    create(api, table_name, dtype="float64")
    weights = weights_of(api, table_name)
    reply = api.post(f"/v1/tables/{table_name}/lookup", json={"ids": ids})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    expected = weights[np.array(ids, dtype=np.int64)]
    assert body["shape"] == list(expected.shape)
    assert body["step"] == 0 and reply.headers["x-table-step"] == "0"
    np.testing.assert_array_equal(np.array(body["vectors"]).reshape(expected.shape), expected)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lookup_npy_is_exact_and_in_the_table_dtype(
    api: httpx.Client, table_name: str, dtype: str
) -> None:
    create(api, table_name, dtype=dtype, num_embeddings=50, embedding_dim=3)
    everything = weights_of(api, table_name)
    ids = np.array([[7, 7, 0], [49, 1, 2]], dtype=np.int32)
    reply = api.post(f"/v1/tables/{table_name}/lookup", content=npy_bytes(ids), headers=NPY)
    assert reply.headers["content-type"] == "application/x-npy"
    out = load_npy(reply.content)
    assert out.dtype == np.dtype(dtype) and out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out, everything[ids])


def test_float32_json_round_trips_exactly(api: httpx.Client, table_name: str) -> None:
    create(api, table_name, init={"kind": "normal", "std": 1.0})
    everything = weights_of(api, table_name)
    body = api.post(f"/v1/tables/{table_name}/lookup", json={"ids": list(range(10))}).json()
    np.testing.assert_array_equal(np.array(body["vectors"], dtype=np.float32), everything)


def test_accept_header_chooses_the_reply_format(api: httpx.Client, table_name: str) -> None:
    create(api, table_name)
    url = f"/v1/tables/{table_name}/lookup"
    as_npy = api.post(url, json={"ids": [1]}, headers={"accept": "application/x-npy"})
    assert as_npy.headers["content-type"] == "application/x-npy"
    as_json = api.post(url, content=npy_bytes(np.array([1])),
                       headers={**NPY, "accept": "application/json"})
    assert as_json.headers["content-type"] == "application/json"
    from_json = np.array(as_json.json()["vectors"], np.float32)
    np.testing.assert_array_equal(load_npy(as_npy.content), from_json)
    anything = api.post(url, content=npy_bytes(np.array([1])), headers={**NPY, "accept": "*/*"})
    assert anything.headers["content-type"] == "application/x-npy"
    refused = api.post(url, json={"ids": [1]}, headers={"accept": "text/html"})
    assert refused.status_code == 406 and "text/html" in refused.json()["detail"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("wire", ["json", "npz"])
def test_training_steps_match_the_reference_layer(
    api: httpx.Client, table_name: str, dtype: str, wire: str
) -> None:
    lr = 0.25
    create(api, table_name, dtype=dtype, optimizer={"kind": "sgd", "lr": lr},
           init={"kind": "normal", "std": 1.0})
    reference = ReferenceEmbedding(weights_of(api, table_name))
    rng = np.random.default_rng(7)
    for step in range(1, 4):
        idx = rng.integers(0, 10, size=(4, 3))  # (batch, context): duplicates certain
        dout = rng.standard_normal((4, 3, 4)).astype(dtype)
        out = load_npy(api.post(f"/v1/tables/{table_name}/lookup", content=npy_bytes(idx),
                                headers=NPY).content)
        np.testing.assert_array_equal(out, reference.forward(idx))
        if wire == "json":
            reply = api.post(f"/v1/tables/{table_name}/gradients",
                             json={"ids": idx.tolist(), "grads": dout.tolist()})
        else:
            reply = api.post(f"/v1/tables/{table_name}/gradients",
                             content=npz_bytes(ids=idx, grads=dout), headers=NPZ)
        assert reply.status_code == 200, reply.text
        assert reply.json() == push_reply(12, len(np.unique(idx)), step - 1)
        reference.backward(dout)
        applied = api.post(f"/v1/tables/{table_name}/apply")
        assert applied.json() == {"step": step, "rows_updated": len(np.unique(idx))}
        reference.sgd(lr)
        np.testing.assert_array_equal(weights_of(api, table_name), reference.params[0])


def test_apply_with_nothing_pending_changes_nothing(api: httpx.Client, table_name: str) -> None:
    create(api, table_name)
    before = weights_of(api, table_name)
    for body in ({}, {"lr": 0.5}):
        reply = api.post(f"/v1/tables/{table_name}/apply", json=body)
        assert reply.json() == {"step": 0, "rows_updated": 0}
    np.testing.assert_array_equal(weights_of(api, table_name), before)
    assert api.get(f"/v1/tables/{table_name}").json()["step"] == 0


def test_apply_lr_override_and_pending_rows_in_info(api: httpx.Client, table_name: str) -> None:
    create(api, table_name, dtype="float64", init={"kind": "zeros"})
    api.post(f"/v1/tables/{table_name}/gradients",
             json={"ids": [2, 2], "grads": [[1] * 4, [2] * 4]})
    assert api.get(f"/v1/tables/{table_name}").json()["pending_rows"] == 1
    assert api.post(f"/v1/tables/{table_name}/apply", json={"lr": 2.0}).json()["rows_updated"] == 1
    np.testing.assert_array_equal(weights_of(api, table_name)[2], [-6.0] * 4)
    assert api.get(f"/v1/tables/{table_name}").json()["pending_rows"] == 0


def test_empty_push_in_json_pushes_nothing(api: httpx.Client, table_name: str) -> None:
    create(api, table_name)
    reply = api.post(f"/v1/tables/{table_name}/gradients", json={"ids": [], "grads": []})
    assert reply.json() == push_reply(0, 0, 0)


def test_apply_average_must_be_a_boolean(api: httpx.Client, table_name: str) -> None:
    create(api, table_name)
    reply = api.post(f"/v1/tables/{table_name}/apply", json={"average": "yes"})
    assert reply.status_code == 422
    assert reply.json()["detail"].startswith("average:")
