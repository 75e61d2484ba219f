"""Real uvicorn processes: stopped with SIGTERM, killed with SIGKILL mid-snapshot, started on a
damaged data directory. What a user of `docker stop` / a crash / a bad disk would see."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from service.core.registry import TableRegistry
from service.core.snapshot_store import SnapshotStore
from tests.api.helpers import create, load_npy
from tests.api.test_snapshots import train
from tests.conftest import LiveServer
from tests.core.test_snapshots import assert_same_table

pytestmark = pytest.mark.e2e


def server_on(data_dir: Path, **env: str) -> LiveServer:
    return LiveServer(env={"EMBED_DATA_DIR": str(data_dir), **env}).start()


def stop_gracefully(server: LiveServer) -> None:
    """SIGTERM; uvicorn shuts down (lifespan included), then re-raises the signal it caught."""
    assert server.stop() in (0, -15)
    assert "snapshot (shutdown): 1 table(s) written" in server.output()


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_sigterm_writes_the_snapshot_and_a_restart_restores_everything(
    tmp_path: Path, make_app: Callable[..., FastAPI]
) -> None:
    """The same training on a real server and on an in-process twin; the server is stopped
    with SIGTERM and started again; then both apply the pending gradient with adam. Equal
    weights after that need the weights, both adam moments, the step and the pending gradient
    to have come back to the bit."""
    server = server_on(tmp_path / "data")
    with httpx.Client(base_url=server.url, timeout=30) as api, TestClient(make_app()) as twin:
        for client in (api, twin):
            create(client, "words", optimizer={"kind": "adam", "lr": 0.1})
            train(client, "words")
        info = api.get("/v1/tables/words").json()
        assert info == twin.get("/v1/tables/words").json()
        stop_gracefully(server)  # SIGTERM: the lifespan's snapshot runs

        server = server_on(tmp_path / "data")
        try:
            with httpx.Client(base_url=server.url, timeout=30) as api:
                assert api.get("/v1/tables/words").json() == info
                assert "restored 1 table(s)" in server.output()
                for client in (api, twin):
                    assert client.post("/v1/tables/words/apply").json()["step"] == 3
                exported = api.get("/v1/tables/words/weights").content
                assert exported == twin.get("/v1/tables/words/weights").content
        finally:
            stop_gracefully(server)
        # the snapshot of the second stop holds adam's moments of the twin, to the bit
        store = SnapshotStore(tmp_path / "data")
        store.open()
        registry = TableRegistry(memory_budget_bytes=2**30, max_tables=10)
        store.restore_into(registry)
        assert_same_table(registry.get("words"), twin.app.state.registry.get("words"))


def test_sigkill_in_the_middle_of_a_snapshot_restarts_from_the_previous_one(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    # 2 MB a second: the 2 MB table takes a second to write, long enough to be killed in it
    server = server_on(data, EMBED_SNAPSHOT_MAX_BYTES_PER_SECOND=str(2 * 2**20),
                       EMBED_SNAPSHOT_ON_SHUTDOWN="false")
    try:
        with httpx.Client(base_url=server.url, timeout=60) as api:
            create(api, "words", num_embeddings=8192, embedding_dim=64)
            train(api, "words", pending=False)
            assert api.post("/v1/snapshots").status_code == 200
            committed = api.get("/v1/tables/words/weights").content
            train(api, "words")  # changes after the snapshot

            threading.Thread(target=lambda: _ignore_errors(api.post, "/v1/snapshots"),
                             daemon=True).start()
            wait_for(lambda: any((data / "tmp").glob("words.*/weights.npy")))
            assert server.process is not None
            server.process.kill()  # SIGKILL: no cleanup, no shutdown snapshot
            assert server.process.wait(30) == -9
    finally:
        server.stop()
    assert len(list((data / "tmp").iterdir())) == 1  # the half-written snapshot

    server = server_on(data)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as api:
            info = api.get("/v1/tables/words").json()
            assert (info["step"], info["pending_rows"]) == (2, 0)
            assert api.get("/v1/tables/words/weights").content == committed
        assert list((data / "tmp").iterdir()) == []  # removed at start
        assert "removed " in server.output() and "interrupted snapshot" in server.output()
    finally:
        server.stop()


def _ignore_errors(call: Callable[[str], object], path: str) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the server is killed under this request
        call(path)


def damaged_data_dir(tmp_path: Path) -> Path:
    """A data directory holding 'words' and 'tags', with words' weights.npy cut short."""
    registry = TableRegistry(memory_budget_bytes=2**30, max_tables=10)
    registry.create("words", 100, 8, seed=1)
    registry.create("tags", 10, 2, seed=2)
    store = SnapshotStore(tmp_path / "data")
    store.open()
    store.snapshot(registry)
    store.close()
    table_dir = tmp_path / "data" / "tables" / "words"
    weights = table_dir / (table_dir / "CURRENT").read_text().strip() / "weights.npy"
    weights.write_bytes(weights.read_bytes()[:1000])
    return weights


def test_a_truncated_file_stops_the_start_with_a_message_naming_it(tmp_path: Path) -> None:
    weights = damaged_data_dir(tmp_path)
    with pytest.raises(RuntimeError, match="exited") as caught:
        server_on(tmp_path / "data")
    line = one_line_refusal(str(caught.value))
    assert f"refusing to start: damaged snapshot: {weights}: is 1000 bytes but meta.json " \
           "recorded 3328 (truncated or altered)" in line
    assert "EMBED_SKIP_DAMAGED_SNAPSHOTS=true" in line


def test_skip_damaged_snapshots_starts_and_logs_the_skip(tmp_path: Path) -> None:
    weights = damaged_data_dir(tmp_path)
    server = server_on(tmp_path / "data", EMBED_SKIP_DAMAGED_SNAPSHOTS="true")
    try:
        tables = httpx.get(f"{server.url}/v1/tables").json()["tables"]
        assert [t["name"] for t in tables] == ["tags"]
        assert f"skipped a damaged table (skip_damaged_snapshots): damaged snapshot: {weights}" \
            in server.output()
    finally:
        server.stop()


def test_an_exported_table_imports_into_another_server(tmp_path: Path) -> None:
    """Export from one process, import into another: the weights arrive to the byte."""
    first, second = server_on(tmp_path / "one"), server_on(tmp_path / "two")
    try:
        with httpx.Client(timeout=30) as api:
            for seed, server in enumerate((first, second)):
                spec = {"name": "words", "num_embeddings": 3000, "embedding_dim": 32, "seed": seed}
                assert api.post(f"{server.url}/v1/tables", json=spec).status_code == 201
            exported = api.get(f"{first.url}/v1/tables/words/weights").content
            reply = api.put(f"{second.url}/v1/tables/words/weights", content=exported,
                            headers={"content-type": "application/x-npy"})
            assert reply.status_code == 200, reply.text
            assert api.get(f"{second.url}/v1/tables/words/weights").content == exported
            assert load_npy(exported).shape == (3000, 32)
    finally:
        first.stop()
        second.stop()


# -- stopping with a stalled client; a second process; refusals at start ---------------------
def stalled_upload(url: str, path: str = "/v1/tables/words/gradients") -> socket.socket:
    """A connection that sent its head and 12 of 100 body bytes, then nothing."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 "Content-Length: 100\r\n\r\n".encode() + b'{"ids": [1],')
    return sock


def test_sigterm_with_a_stalled_upload_still_writes_the_shutdown_snapshot(tmp_path: Path) -> None:
    """The reported case: a client stalls mid-body; SIGTERM must still end the process within
    the graceful bound, with the shutdown snapshot written (the body timeout is set out of the
    way so that the graceful bound is what ends the wait)."""
    data = tmp_path / "data"
    server = server_on(data, EMBED_GRACEFUL_SHUTDOWN_SECONDS="2",
                       EMBED_REQUEST_BODY_TIMEOUT_SECONDS="3600")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as api:
            create(api, "words")
            for _ in range(5):
                body = {"ids": [1, 2], "grads": [[1.0] * 4] * 2, "apply": True}
                assert api.post("/v1/tables/words/gradients", json=body).status_code == 200
            sock = stalled_upload(server.url)
            time.sleep(0.5)  # the head has been read and the request is waiting for its body
            assert server.process is not None
            server.process.terminate()
            try:
                code = server.process.wait(60)
            except subprocess.TimeoutExpired:
                code = None
            sock.close()
    finally:
        server.stop()
    assert code in (0, -15), f"not stopped within the graceful bound:\n{server.output()}"
    assert "snapshot (shutdown): 1 table(s) written" in server.output()
    server = server_on(data)
    try:
        assert httpx.get(f"{server.url}/v1/tables/words").json()["step"] == 5
    finally:
        server.stop()


def one_line_refusal(output: str) -> str:
    """The line saying why the service did not start; no traceback anywhere."""
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "refusing to start" in line]
    assert len(lines) == 1, output
    return lines[0]


def test_a_second_process_on_the_same_data_dir_refuses_to_start(tmp_path: Path) -> None:
    first = server_on(tmp_path / "data")
    try:
        in_flight = tmp_path / "data" / "tmp" / "words.5f0c0ffee"
        in_flight.mkdir()
        with pytest.raises(RuntimeError, match="exited") as caught:
            server_on(tmp_path / "data")
        assert first.process is not None
        line = one_line_refusal(str(caught.value))
        assert (f"data_dir {tmp_path / 'data'} is in use by another process "
                f"(pid {first.process.pid})") in line
        assert in_flight.is_dir()  # the first one's files are left alone
        assert httpx.get(f"{first.url}/healthz").status_code == 200
    finally:
        first.stop()


def test_an_unusable_data_dir_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(RuntimeError, match="exited") as caught:
        server_on(tmp_path / "file" / "data")
    line = one_line_refusal(str(caught.value))
    assert f"data_dir {tmp_path / 'file' / 'data'} cannot be used" in line


def test_restored_tables_over_a_smaller_budget_are_one_line(
    tmp_path: Path, make_app: Callable[..., FastAPI]
) -> None:
    with TestClient(make_app(data_dir=tmp_path / "data")) as client:  # snapshot on the way out
        create(client, "words", num_embeddings=1000, embedding_dim=100)  # 400,000 bytes
    with pytest.raises(RuntimeError, match="exited") as caught:
        server_on(tmp_path / "data", EMBED_MEMORY_BUDGET_BYTES="100000")
    line = one_line_refusal(str(caught.value))
    assert "table 'words' needs 400000 bytes" in line
    assert "EMBED_MEMORY_BUDGET_BYTES" in line
