"""Labels, neighbours and the projection over HTTP, on both transports (in-process and uvicorn),
and labels through a snapshot and a restart of a real uvicorn process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from tests.api.helpers import create, weights_of
from tests.conftest import LiveServer


def test_labels_round_trip(api: httpx.Client, table_name: str) -> None:
    path = f"/v1/tables/{table_name}"
    plain = create(api, table_name, num_embeddings=6)
    reply = api.put(f"{path}/labels", json={"labels": ["king", "queen", "man", "woman"]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["labels"] == 4
    assert reply.json()["nbytes"] > plain["nbytes"]
    assert api.get(path).json()["nbytes"] == reply.json()["nbytes"]
    assert api.get(f"{path}/labels?ids=3,0,5").json() == {"ids": [3, 0, 5],
                                                          "labels": ["woman", "king", None]}
    reply = api.put(f"{path}/labels", json={"ids": [5, 0], "labels": ["prince", "monarch"],
                                            "merge": True})
    assert reply.status_code == 200, reply.text
    assert api.get(f"{path}/labels").json() == {
        "ids": [0, 1, 2, 3, 5], "labels": ["monarch", "queen", "man", "woman", "prince"]}
    api.put(f"{path}/labels", json={"ids": [4], "labels": ["only"]}).raise_for_status()
    assert api.get(f"{path}/labels").json() == {"ids": [4], "labels": ["only"]}
    assert api.put(f"{path}/labels", json={"labels": []}).json()["labels"] == 0
    assert api.get(f"{path}/labels?ids=").json() == {"ids": [], "labels": []}


def numpy_oracle(weights: np.ndarray, positive: list[int], negative: list[int], k: int,
                 metric: str) -> tuple[list[int], np.ndarray]:
    """The same search in plain float64 numpy (stable sort: equal scores by smaller id)."""
    rows = weights.astype(np.float64)
    norms = np.linalg.norm(rows, axis=1)
    unit = rows / np.where(norms > 0, norms, 1)[:, None]
    source = unit if metric == "cosine" else rows
    query = source[positive].sum(axis=0) - source[negative].sum(axis=0)
    if metric == "cosine":
        scores = unit @ (query / np.linalg.norm(query))
    elif metric == "dot":
        scores = rows @ query
    else:
        scores = -np.linalg.norm(rows - query, axis=1)
    order = [i for i in np.argsort(-scores, kind="stable") if i not in {*positive, *negative}]
    best = order[:k]
    return best, np.abs(scores[best]) if metric == "l2" else scores[best]


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_neighbors_match_numpy(api: httpx.Client, table_name: str, metric: str) -> None:
    path = f"/v1/tables/{table_name}"
    create(api, table_name, num_embeddings=300, embedding_dim=8, dtype="float64", seed=4)
    words = [f"w{i}" for i in range(300)]
    api.put(f"{path}/labels", json={"labels": words}).raise_for_status()
    weights = weights_of(api, table_name)
    reply = api.post(f"{path}/neighbors", json={"positive": ["w3", 17], "negative": ["w40"],
                                                "k": 7, "metric": metric})
    assert reply.status_code == 200, reply.text
    ids, scores = numpy_oracle(weights, [3, 17], [40], 7, metric)
    body = reply.json()
    assert body["ids"] == ids
    np.testing.assert_allclose(body["scores"], scores, rtol=1e-12)
    assert body["labels"] == [words[i] for i in ids]
    batch = api.post(f"{path}/neighbors", json={
        "queries": [{"positive": [3, 17], "negative": ["w40"]}, {"positive": ["w9"]}],
        "k": 7, "metric": metric}).json()["results"]
    # the same query in a batch: the same rows; scores to the last bits BLAS may order apart
    assert batch[0]["ids"] == body["ids"] and batch[0]["labels"] == body["labels"]
    np.testing.assert_allclose(batch[0]["scores"], body["scores"], rtol=1e-12)
    assert batch[1]["ids"] == numpy_oracle(weights, [9], [], 7, metric)[0]
    # k past the rows: every other row, each once
    everything = api.post(f"{path}/neighbors", json={"positive": [0], "k": 1000,
                                                     "metric": metric}).json()
    assert sorted(everything["ids"]) == list(range(1, 300))


def test_projection(api: httpx.Client, table_name: str) -> None:
    path = f"/v1/tables/{table_name}"
    create(api, table_name, num_embeddings=50, embedding_dim=6, dtype="float64")
    api.put(f"{path}/labels", json={"labels": ["a", "b"]}).raise_for_status()
    reply = api.get(f"{path}/projection?sample=20").json()
    assert reply["ids"] == list(range(20))
    assert reply["labels"][:3] == ["a", "b", None]
    assert reply["live_rows"] == 50
    rows = weights_of(api, table_name)[:20]
    centred = rows - rows.mean(axis=0)
    points = np.array(reply["points"])  # (20, 2)
    # the points are the rows' coordinates on orthonormal axes that hold the most variance
    axes = np.linalg.lstsq(centred, points, rcond=None)[0]  # (6, 2)
    np.testing.assert_allclose(centred @ axes, points, atol=1e-12)
    np.testing.assert_allclose(axes.T @ axes, np.eye(2), atol=1e-9)
    singular = np.linalg.svd(centred, compute_uv=False)
    np.testing.assert_allclose(reply["explained_variance_ratio"],
                               singular[:2] ** 2 / (singular**2).sum(), rtol=1e-9)
    sampled = api.get(f"{path}/projection?sample=10&seed=3").json()
    assert len(sampled["ids"]) == 10 and sampled["ids"] == sorted(set(sampled["ids"]))
    assert sampled == api.get(f"{path}/projection?sample=10&seed=3").json()


def test_a_labels_change_is_snapshotted(make_app: Callable[..., FastAPI], tmp_path: Path) -> None:
    with TestClient(make_app(data_dir=tmp_path)) as client:
        create(client, "words")
        client.post("/v1/snapshots").raise_for_status()
        assert client.post("/v1/snapshots").json()["unchanged"] == ["words"]
        client.put("/v1/tables/words/labels", json={"labels": ["x", "y"]}).raise_for_status()
        assert [t["name"] for t in client.post("/v1/snapshots").json()["tables"]] == ["words"]
    with TestClient(make_app(data_dir=tmp_path)) as client:
        assert client.get("/v1/tables/words/labels").json() == {"ids": [0, 1],
                                                                "labels": ["x", "y"]}


@pytest.mark.e2e
def test_labels_survive_a_restart(tmp_path: Path) -> None:
    env = {"EMBED_DATA_DIR": str(tmp_path)}
    server = LiveServer(env=env).start()
    try:
        httpx.post(f"{server.url}/v1/tables", json={"name": "words", "num_embeddings": 4,
                                                    "embedding_dim": 2}).raise_for_status()
        httpx.put(f"{server.url}/v1/tables/words/labels",
                  json={"labels": ["ä", "b", "c d", "e"]}).raise_for_status()
        before = httpx.get(f"{server.url}/v1/tables/words").json()
    finally:
        assert server.stop() in (0, -15)  # SIGTERM: the shutdown snapshot writes the labels
    server = LiveServer(env=env).start()
    try:
        assert httpx.get(f"{server.url}/v1/tables/words/labels").json() == {
            "ids": [0, 1, 2, 3], "labels": ["ä", "b", "c d", "e"]}
        after = httpx.get(f"{server.url}/v1/tables/words").json()
        assert after["labels"] == 4 and after["nbytes"] == before["nbytes"]
        reply = httpx.post(f"{server.url}/v1/tables/words/neighbors", json={"positive": ["b"]})
        assert reply.json()["labels"][0] in {"ä", "c d", "e"}
    finally:
        server.stop()
