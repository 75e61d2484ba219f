"""Soak: mixed traffic from 8 clients against a live uvicorn for EMBED_SOAK_SECONDS (default 10,
so CI runs a short version; 60 for the full run the issue asks for):

    EMBED_SOAK_SECONDS=60 .venv/bin/python -m pytest -m soak -s

Lookups and pushes (JSON and binary), applies, table descriptions, listings, metrics scrapes,
deliberate bad requests (each must get its exact 4xx) and a scratch table created and deleted
over and over. Passes with zero errors (any unexpected status or transport error), and the
server's resident memory (VmRSS) after warm-up (the first quarter) grows less than 5%.
Loopback only; it stops by itself.
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.api import codecs
from tests.conftest import LiveServer

SECONDS = float(os.environ.get("EMBED_SOAK_SECONDS", "10"))
CLIENTS = 8
BATCH = 256
TABLES = {
    "soak-adagrad": {"num_embeddings": 50_000, "embedding_dim": 32, "dtype": "float32",
                     "optimizer": {"kind": "adagrad", "lr": 0.1}},
    "soak-sgd64": {"num_embeddings": 5_000, "embedding_dim": 16, "dtype": "float64",
                   "optimizer": {"kind": "sgd", "lr": 0.01}},
}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@dataclass
class Tally:
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, what: str, reply: httpx.Response, expected: int) -> None:
        with self.lock:
            self.requests += 1
            if reply.status_code != expected and len(self.errors) < 20:
                self.errors.append(f"{what}: {reply.status_code} (wanted {expected}) "
                                   f"{reply.text[:200]}")


def one_request(client: httpx.Client, rng: random.Random, tally: Tally, worker: int) -> None:
    name = rng.choice(sorted(TABLES))
    spec = TABLES[name]
    rows, dim = spec["num_embeddings"], spec["embedding_dim"]
    ids = np.array([rng.randrange(rows) for _ in range(BATCH)])
    action = rng.random()
    if action < 0.30:
        reply = client.post(f"/v1/tables/{name}/lookup", content=codecs.to_npy(ids),
                            headers={"Content-Type": codecs.NPY})
        tally.record("lookup npy", reply, 200)
    elif action < 0.40:
        reply = client.post(f"/v1/tables/{name}/lookup", json={"ids": ids[:32].tolist()})
        tally.record("lookup json", reply, 200)
    elif action < 0.65:
        grads = np.ones((BATCH, dim), dtype=np.float32)
        reply = client.post(f"/v1/tables/{name}/gradients",
                            content=codecs.to_npz(ids=ids, grads=grads),
                            headers={"Content-Type": codecs.NPZ})
        tally.record("push npz", reply, 200)
    elif action < 0.72:
        reply = client.post(f"/v1/tables/{name}/gradients", json={
            "ids": ids[:16].tolist(), "grads": [[0.5] * dim] * 16, "apply": True})
        tally.record("push json", reply, 200)
    elif action < 0.82:
        tally.record("apply", client.post(f"/v1/tables/{name}/apply"), 200)
    elif action < 0.86:
        tally.record("describe", client.get(f"/v1/tables/{name}"), 200)
    elif action < 0.88:
        tally.record("list", client.get("/v1/tables"), 200)
    elif action < 0.90:
        tally.record("metrics", client.get("/metrics"), 200)
    elif action < 0.95:
        bad = rng.choice([
            ("bad ids", f"/v1/tables/{name}/lookup", {"json": {"ids": [-1]}}, 422),
            ("no table", "/v1/tables/nowhere/lookup", {"json": {"ids": [1]}}, 404),
            ("bad npy", f"/v1/tables/{name}/lookup",
             {"content": b"nonsense", "headers": {"Content-Type": codecs.NPY}}, 422),
            ("nan grads", f"/v1/tables/{name}/gradients",
             {"content": codecs.to_npz(ids=ids[:1], grads=np.full((1, dim), np.nan)),
              "headers": {"Content-Type": codecs.NPZ}}, 422),
        ])
        tally.record(bad[0], client.post(bad[1], **bad[2]), bad[3])
    else:
        scratch = f"soak-scratch-{worker}"
        created = client.post("/v1/tables", json={
            "name": scratch, "num_embeddings": 2_000, "embedding_dim": 16,
            "optimizer": {"kind": "adam"}})
        tally.record("create scratch", created, 201)
        pushed = client.post(f"/v1/tables/{scratch}/gradients", json={
            "ids": [1, 2, 3], "grads": [[1.0] * 16] * 3, "apply": True})
        tally.record("push scratch", pushed, 200)
        tally.record("delete scratch", client.delete(f"/v1/tables/{scratch}"), 204)


def client_loop(url: str, worker: int, deadline: float, tally: Tally) -> None:
    rng = random.Random(worker)
    try:
        with httpx.Client(base_url=url, timeout=60.0) as client:
            while time.monotonic() < deadline:
                one_request(client, rng, tally, worker)
    except Exception as error:  # noqa: BLE001 - a transport error is an error of the run
        with tally.lock:
            tally.errors.append(f"client {worker}: {error!r}")


@pytest.mark.soak
@pytest.mark.e2e
def test_soak() -> None:
    server = LiveServer().start()
    try:
        assert server.process is not None
        with httpx.Client(base_url=server.url, timeout=60.0) as client:
            for name, spec in TABLES.items():
                assert client.post("/v1/tables", json={"name": name, **spec}).status_code == 201
                # every row pending once: the pending-gradient buffers reach their full size
                # now, not at some random moment of the run (they never shrink below it)
                rows, dim = spec["num_embeddings"], spec["embedding_dim"]
                every_row = codecs.to_npz(ids=np.arange(rows),
                                          grads=np.zeros((rows, dim), dtype=np.float32))
                client.post(f"/v1/tables/{name}/gradients", content=every_row,
                            headers={"Content-Type": codecs.NPZ}).raise_for_status()
                client.post(f"/v1/tables/{name}/apply").raise_for_status()
        tally = Tally()
        started = time.monotonic()
        deadline = started + SECONDS
        threads = [threading.Thread(target=client_loop, args=(server.url, worker, deadline,
                                                              tally))
                   for worker in range(CLIENTS)]
        for thread in threads:
            thread.start()
        time.sleep(SECONDS / 4)  # warm-up: buffers, caches and the allocator settle
        warm_rss = rss_bytes(server.process.pid)
        samples = []
        while any(thread.is_alive() for thread in threads):
            samples.append(rss_bytes(server.process.pid))
            time.sleep(0.25)
        for thread in threads:
            thread.join()
        final_rss = rss_bytes(server.process.pid)
        growth = (final_rss - warm_rss) / warm_rss
        print(f"soak: {tally.requests} requests in {time.monotonic() - started:.1f} s from "
              f"{CLIENTS} clients; RSS after warm-up {warm_rss / 2**20:.1f} MiB, at the end "
              f"{final_rss / 2**20:.1f} MiB ({growth:+.2%}), peak {max(samples) / 2**20:.1f} MiB")
        assert tally.errors == []
        assert tally.requests > CLIENTS
        assert growth < 0.05
        assert server.process.poll() is None
    finally:
        server.stop()
