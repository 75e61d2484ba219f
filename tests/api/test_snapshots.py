"""POST /v1/snapshots, GET and PUT /v1/tables/{name}/weights, and the tables across restarts."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from service.core.errors import SnapshotDamaged
from tests.api.helpers import NPY, create, load_npy, npy_bytes, npz_bytes, weights_of
from tests.core.test_snapshot_store import with_hook
from tests.core.test_snapshots import assert_same_table

MakeApp = Callable[..., FastAPI]


def train(api: httpx.Client, name: str, *, pending: bool = True) -> None:
    """Two applied steps (one asynchronous), then a pending gradient of two pushes."""
    info = api.get(f"/v1/tables/{name}").json()
    rows, dim = info["num_embeddings"], info["embedding_dim"]
    rng = np.random.default_rng(3)
    for apply in (True, False):
        ids = rng.integers(0, rows, 6)
        body = npz_bytes(ids=ids, grads=rng.standard_normal((6, dim)))
        reply = api.post(f"/v1/tables/{name}/gradients", params={"apply": apply}, content=body,
                         headers={"content-type": "application/x-npz"})
        assert reply.status_code == 200, reply.text
    assert api.post(f"/v1/tables/{name}/apply").status_code == 200
    for _ in range(2 if pending else 0):
        body = {"ids": [1, 2, 2], "grads": rng.standard_normal((3, dim)).tolist()}
        assert api.post(f"/v1/tables/{name}/gradients", json=body).status_code == 200


# -- snapshots and restarts ------------------------------------------------------------------------
def test_post_snapshots_reports_what_it_wrote(make_app: MakeApp, tmp_path: Path) -> None:
    with TestClient(make_app(data_dir=tmp_path, snapshot_on_shutdown=False)) as client:
        create(client, "words", optimizer={"kind": "adam"})
        create(client, "tags")
        train(client, "words")

        first = client.post("/v1/snapshots")
        second = client.post("/v1/snapshots")

    assert first.status_code == 200, first.text
    body = first.json()
    assert sorted(t["name"] for t in body["tables"]) == ["tags", "words"]
    assert {t["name"]: t["step"] for t in body["tables"]} == {"tags": 0, "words": 2}
    assert body["unchanged"] == []
    assert body["bytes"] == sum(t["bytes"] for t in body["tables"]) > 10 * 4 * 4 * 3
    assert second.json()["tables"] == [] and sorted(second.json()["unchanged"]) == ["tags", "words"]
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == ["tags", "words"]


def test_a_restart_brings_back_weights_optimizer_state_step_and_pending_gradient(
    make_app: MakeApp, tmp_path: Path
) -> None:
    with TestClient(make_app(data_dir=tmp_path)) as client:
        create(client, "words", optimizer={"kind": "adam", "lr": 0.1}, max_staleness=3)
        train(client, "words")
        before = client.get("/v1/tables/words").json()
        original = client.app.state.registry.get("words")
    # leaving the block is a graceful shutdown: the snapshot is written then

    with TestClient(make_app(data_dir=tmp_path)) as client:
        assert client.get("/v1/tables/words").json() == before
        assert before["step"] == 2 and before["pending_rows"] == 2
        assert_same_table(client.app.state.registry.get("words"), original)


def test_nothing_is_written_on_shutdown_when_told_not_to(make_app: MakeApp, tmp_path: Path) -> None:
    with TestClient(make_app(data_dir=tmp_path, snapshot_on_shutdown=False)) as client:
        create(client, "words")
    with TestClient(make_app(data_dir=tmp_path)) as client:
        assert client.get("/v1/tables").json() == {"tables": []}


def test_periodic_snapshots_write_changed_tables(make_app: MakeApp, tmp_path: Path) -> None:
    app = make_app(data_dir=tmp_path, snapshot_interval_seconds=0.05, snapshot_on_shutdown=False)
    with TestClient(app) as client:
        create(client, "words")
        pointer = tmp_path / "tables" / "words" / "CURRENT"
        deadline = time.monotonic() + 30
        while not pointer.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pointer.exists()
    with TestClient(make_app(data_dir=tmp_path)) as client:
        assert [t["name"] for t in client.get("/v1/tables").json()["tables"]] == ["words"]


def test_a_deleted_table_stays_deleted_after_a_restart(make_app: MakeApp, tmp_path: Path) -> None:
    with TestClient(make_app(data_dir=tmp_path)) as client:
        create(client, "words")
        create(client, "tags")
        assert client.post("/v1/snapshots").status_code == 200
        assert client.delete("/v1/tables/words").status_code == 204
    with TestClient(make_app(data_dir=tmp_path, snapshot_on_shutdown=False)) as client:
        assert [t["name"] for t in client.get("/v1/tables").json()["tables"]] == ["tags"]
    assert [p.name for p in (tmp_path / "tables").iterdir()] == ["tags"]


def test_requests_are_served_while_a_snapshot_is_written(
    make_app: MakeApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot is held in the middle of writing 'words' until lookups, pushes and an
    apply of 'words' and of another table have been answered."""
    writing, release = threading.Event(), threading.Event()

    def hold(nbytes: int) -> None:
        writing.set()
        assert release.wait(60)

    with_hook(monkeypatch, hold)
    with TestClient(make_app(data_dir=tmp_path, snapshot_on_shutdown=False)) as client:
        create(client, "words")
        create(client, "tags")
        replies: list[httpx.Response] = []
        snapshot = threading.Thread(target=lambda: replies.append(client.post("/v1/snapshots")))
        snapshot.start()
        assert writing.wait(60)
        for name in ("words", "tags"):
            assert client.post(f"/v1/tables/{name}/lookup", json={"ids": [1]}).status_code == 200
            body = {"ids": [1], "grads": [[1.0] * 4], "apply": True}
            assert client.post(f"/v1/tables/{name}/gradients", json=body).json()["step"] == 1
        assert replies == []  # the snapshot is still being written
        release.set()
        snapshot.join(60)
        assert replies[0].status_code == 200
        written = {t["name"]: t["step"] for t in replies[0].json()["tables"]}
        assert written == {"words": 1, "tags": 1}  # as of the end of each table's write


def truncated_snapshot(make_app: MakeApp, tmp_path: Path) -> Path:
    with TestClient(make_app(data_dir=tmp_path)) as client:
        create(client, "words")
        create(client, "tags")
    table_dir = tmp_path / "tables" / "words"
    weights = table_dir / (table_dir / "CURRENT").read_text().strip() / "weights.npy"
    weights.write_bytes(weights.read_bytes()[:100])
    return weights


def test_a_damaged_snapshot_stops_the_start_naming_the_file(
    make_app: MakeApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    weights = truncated_snapshot(make_app, tmp_path)
    with pytest.raises(SnapshotDamaged) as caught, TestClient(make_app(data_dir=tmp_path)):
        pass
    assert caught.value.path == str(weights)
    assert f"refusing to start: damaged snapshot: {weights}: is 100 bytes" in caplog.text
    assert "EMBED_SKIP_DAMAGED_SNAPSHOTS" in caplog.text


def test_skip_damaged_snapshots_starts_without_that_table(
    make_app: MakeApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    weights = truncated_snapshot(make_app, tmp_path)
    with caplog.at_level(logging.WARNING), TestClient(
        make_app(data_dir=tmp_path, skip_damaged_snapshots=True)
    ) as client:
        assert [t["name"] for t in client.get("/v1/tables").json()["tables"]] == ["tags"]
    assert f"skipped a damaged table (skip_damaged_snapshots): damaged snapshot: {weights}" \
        in caplog.text
    assert [p.name.split("-")[0] for p in (tmp_path / "damaged").iterdir()] == ["words"]


def test_a_disk_that_refuses_a_snapshot_is_a_503(make_app: MakeApp, tmp_path: Path) -> None:
    with TestClient(make_app(data_dir=tmp_path, snapshot_on_shutdown=False)) as client:
        create(client, "words")
        (tmp_path / "tmp").rmdir()
        (tmp_path / "tmp").write_text("in the way")
        reply = client.post("/v1/snapshots")
    assert reply.status_code == 503
    assert reply.json()["detail"].startswith("the snapshot of table 'words' could not be written")
    assert str(tmp_path) not in reply.text  # the server's paths are its own business


def test_a_delete_that_fails_has_not_deleted(make_app: MakeApp, tmp_path: Path) -> None:
    """The disk refuses to remove the snapshot: 503, and the table is still there (served, and
    back after a restart: the two agree). Once the disk is fixed, the same DELETE completes."""
    with TestClient(make_app(data_dir=tmp_path, snapshot_on_shutdown=False)) as client:
        create(client, "words")
        assert client.post("/v1/snapshots").status_code == 200
        (tmp_path / "trash").rmdir()
        (tmp_path / "trash").write_text("in the way")
        reply = client.delete("/v1/tables/words")
        assert reply.status_code == 503
        assert client.get("/v1/tables/words").status_code == 200
        assert reply.json()["detail"] == (
            "table 'words' was not deleted: its snapshot could not be removed from the data "
            "directory (tables/words): Not a directory"
        )
    (tmp_path / "trash").unlink()  # the disk is fixed
    (tmp_path / "trash").mkdir()
    with TestClient(make_app(data_dir=tmp_path, snapshot_on_shutdown=False)) as client:
        assert client.get("/v1/tables/words").status_code == 200
        assert client.delete("/v1/tables/words").status_code == 204
        assert client.get("/v1/tables/words").status_code == 404
    with TestClient(make_app(data_dir=tmp_path, snapshot_on_shutdown=False)) as client:
        assert client.get("/v1/tables").json() == {"tables": []}


# -- export ----------------------------------------------------------------------------------------
def test_export_streams_the_whole_matrix_as_npy(api: httpx.Client, table_name: str) -> None:
    create(api, table_name, optimizer={"kind": "adagrad"})
    train(api, table_name)
    reply = api.get(f"/v1/tables/{table_name}/weights")

    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/x-npy"
    assert reply.headers["x-table-step"] == "2"
    assert int(reply.headers["content-length"]) == len(reply.content)
    exported = load_npy(reply.content)
    assert exported.dtype == np.float32 and exported.shape == (10, 4)
    assert exported.tobytes() == weights_of(api, table_name).tobytes()


def test_export_as_json_for_small_tables(api: httpx.Client, table_name: str) -> None:
    create(api, table_name, dtype="float64")
    reply = api.get(f"/v1/tables/{table_name}/weights", headers={"accept": "application/json"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["shape"] == [10, 4]
    np.testing.assert_array_equal(np.array(reply.json()["vectors"]), weights_of(api, table_name))


def test_export_of_a_large_table_is_npy_only(make_app: MakeApp) -> None:
    with TestClient(make_app(max_json_weights_bytes=159)) as client:
        create(client, "words")  # 10 x 4 float32: 160 bytes
        reply = client.get("/v1/tables/words/weights", headers={"accept": "application/json"})
    assert reply.status_code == 406
    assert reply.json()["detail"] == (
        "table 'words' has 160 bytes of weights, more than max_json_weights_bytes=159 for JSON; "
        "ask for Accept: application/x-npy")


def test_export_refuses_what_it_cannot_send(api: httpx.Client, table_name: str) -> None:
    assert api.get(f"/v1/tables/{table_name}/weights").status_code == 404
    create(api, table_name)
    reply = api.get(f"/v1/tables/{table_name}/weights", headers={"accept": "text/html"})
    assert reply.status_code == 406
    assert "text/html" in reply.json()["detail"]


def test_export_of_a_table_larger_than_one_chunk(make_app: MakeApp) -> None:
    with TestClient(make_app()) as client:
        create(client, "big", num_embeddings=70_000, embedding_dim=64)  # 17.9 MB: two chunks
        reply = client.get("/v1/tables/big/weights")
        table = client.app.state.registry.get("big")
        assert load_npy(reply.content).tobytes() == table.weights.tobytes()


# -- import ----------------------------------------------------------------------------------------
def test_import_replaces_the_weights_and_drops_the_pending_gradient(
    api: httpx.Client, table_name: str
) -> None:
    create(api, table_name, optimizer={"kind": "adam"})
    train(api, table_name)
    before = api.get(f"/v1/tables/{table_name}").json()
    pretrained = np.linspace(-1, 1, 40, dtype=np.float32).reshape(10, 4)

    reply = api.put(f"/v1/tables/{table_name}/weights", content=npy_bytes(pretrained),
                    headers=NPY)

    assert reply.status_code == 200, reply.text
    assert reply.headers["x-pending-rows-dropped"] == "2"
    assert reply.json() == {**before, "pending_rows": 0, "nbytes": reply.json()["nbytes"]}
    assert weights_of(api, table_name).tobytes() == pretrained.tobytes()
    exported = api.get(f"/v1/tables/{table_name}/weights").content
    assert exported == npy_bytes(pretrained)  # export(import(x)) == x, to the byte


def bad_bodies() -> dict[str, tuple[bytes, str]]:
    good = np.zeros((10, 4), dtype=np.float32)
    nan = good.copy()
    nan[7, 1] = np.nan
    fortran = np.asfortranarray(np.zeros((10, 4), dtype=np.float32))
    with_object = io.BytesIO()
    np.save(with_object, np.array([[None] * 4] * 10, dtype=object), allow_pickle=True)
    return {
        "shape": (npy_bytes(np.zeros((10, 5), np.float32)), "holds an array of shape [10, 5] "
                  "and dtype float32; table '{name}' needs shape [10, 4] and dtype float32"),
        "dtype": (npy_bytes(good.astype(np.float64)), "holds an array of shape [10, 4] and "
                  "dtype float64; table '{name}' needs shape [10, 4] and dtype float32"),
        "truncated": (npy_bytes(good)[:-1], "body is a truncated .npy: shape [10, 4] and dtype "
                      "float32 needs 160 bytes of data, got 159"),
        "padded": (npy_bytes(good) + b"\0", "body is longer than an .npy of shape [10, 4]"),
        "not-npy": (b'{"vectors": []}' * 3, "body is not a valid .npy array: the magic string"),
        "header-only": (npy_bytes(good)[:20], "it ended after 20 bytes, inside the header"),
        "empty": (b"", "it ended after 0 bytes"),
        "nan": (npy_bytes(nan), "body must hold finite weights, got NaN or infinity in row 7"),
        "fortran": (npy_bytes(fortran)[:128] + b"\0" * 160, "Fortran-order"),
        "object": (with_object.getvalue(), "object, pickled or structured arrays are refused"),
        # a header numpy's tokenizer chokes on (tokenize.TokenError, not a ValueError)
        "mangled-header": (npy_bytes(good).replace(b"(10, 4), }", b"(0,\xd7, }  "),
                           "body is not a valid .npy array"),
    }


@pytest.mark.parametrize("case", sorted(bad_bodies()))
def test_a_bad_import_is_a_422_and_changes_nothing(
    api: httpx.Client, table_name: str, case: str
) -> None:
    create(api, table_name)
    train(api, table_name)
    before = (weights_of(api, table_name).tobytes(), api.get(f"/v1/tables/{table_name}").json())
    body, detail = bad_bodies()[case]

    reply = api.put(f"/v1/tables/{table_name}/weights", content=body, headers=NPY)

    assert reply.status_code == 422, reply.text
    assert detail.format(name=table_name) in reply.json()["detail"]
    after = (weights_of(api, table_name).tobytes(), api.get(f"/v1/tables/{table_name}").json())
    assert after == before


def test_an_import_must_be_npy(api: httpx.Client, table_name: str) -> None:
    assert api.put(f"/v1/tables/{table_name}/weights", content=b"", headers=NPY).status_code == 404
    create(api, table_name)
    reply = api.put(f"/v1/tables/{table_name}/weights", json={"vectors": [[0.0] * 4] * 10})
    assert reply.status_code == 415
    assert reply.json()["detail"] == ("Content-Type 'application/json' is not supported here; "
                                      "send 'application/x-npy' (np.save's bytes)")


def test_imports_have_their_own_body_limit(make_app: MakeApp) -> None:
    weights = np.ones((100, 4), dtype=np.float32)  # 1728 bytes as .npy
    with TestClient(make_app(max_body_bytes=1000)) as client:
        create(client, "words", num_embeddings=100)
        assert client.put("/v1/tables/words/weights", content=npy_bytes(weights),
                          headers=NPY).status_code == 200  # above max_body_bytes: fine here
        assert client.post("/v1/tables/words/lookup", content=b"x" * 1001,
                           headers=NPY).status_code == 413  # other routes keep it
    with TestClient(make_app(max_weights_body_bytes=1000)) as client:
        create(client, "words", num_embeddings=100)
        reply = client.put("/v1/tables/words/weights", content=npy_bytes(weights), headers=NPY)
        assert reply.status_code == 413
        assert reply.json()["detail"] == "Content-Length 1728 exceeds max_weights_body_bytes=1000"


def test_an_import_survives_a_restart(make_app: MakeApp, tmp_path: Path) -> None:
    pretrained = np.arange(40, dtype=np.float32).reshape(10, 4)
    with TestClient(make_app(data_dir=tmp_path)) as client:
        create(client, "words")
        client.put("/v1/tables/words/weights", content=npy_bytes(pretrained), headers=NPY)
    with TestClient(make_app(data_dir=tmp_path)) as client:
        assert client.get("/v1/tables/words/weights").content == npy_bytes(pretrained)
