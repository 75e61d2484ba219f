"""8 threads x 200 pushes of overlapping ids into one float64 table of a live uvicorn,
interleaved with lookups and applies.

Every push sends each row of the table exactly twice (two shuffled copies of all ids: every push
overlaps every other, duplicates included) with the same integer gradient v * [1, 2, 3, 4]. So:

- every apply, whatever it holds, moves every row by the same amount: a lookup of all rows must
  see identical rows, each a multiple of [1, 2, 3, 4]; a half-applied update (some rows or some
  columns moved, others not) breaks that;
- the gradients are integers and lr = 1, so the float64 sums are exact in any order: the final
  weights are exactly -2 * (sum of all v) * [1, 2, 3, 4].
"""

from __future__ import annotations

import random
import threading

import httpx
import numpy as np
import pytest

from service.api import codecs
from tests.conftest import LiveServer

THREADS = 8
PUSHES = 200
ROWS = 32
DIM = 4
PATTERN = np.arange(1, DIM + 1, dtype=np.float64)  # (dim,)


def check_consistent(rows: np.ndarray) -> None:
    """All rows equal, each a multiple of PATTERN: no lookup sees half an update."""
    assert rows.shape == (ROWS, DIM)
    assert (rows == rows[0]).all(), f"rows differ within one lookup:\n{rows}"
    assert (rows[0] == rows[0][0] * PATTERN).all(), f"a row is half updated: {rows[0]}"


def worker(url: str, name: str, seed: int, pushed: list[int], failures: list[str]) -> None:
    rng = random.Random(seed)
    total = 0
    try:
        with httpx.Client(base_url=url, timeout=60.0) as client:
            for i in range(PUSHES):
                ids = rng.sample(range(ROWS), ROWS) + rng.sample(range(ROWS), ROWS)
                value = rng.randint(1, 9)
                grads = np.tile(value * PATTERN, (len(ids), 1))  # (2 * rows, dim)
                asynchronous = i % 17 == 0  # sometimes apply at once (one step, same rows)
                if i % 2:
                    reply = client.post(f"/v1/tables/{name}/gradients", content=codecs.to_npz(
                        ids=np.array(ids), grads=grads), headers={"Content-Type": codecs.NPZ},
                        params={"apply": str(asynchronous).lower()})
                else:
                    reply = client.post(f"/v1/tables/{name}/gradients", json={
                        "ids": ids, "grads": grads.tolist(), "apply": asynchronous})
                assert reply.status_code == 200, reply.text
                assert reply.json()["rows"] == 2 * ROWS
                total += 2 * value
                if i % 10 == 3:
                    assert client.post(f"/v1/tables/{name}/apply").status_code == 200
                if i % 4 == 1:
                    order = rng.sample(range(ROWS), ROWS)
                    reply = client.post(f"/v1/tables/{name}/lookup",
                                        content=codecs.to_npy(np.array(order)),
                                        headers={"Content-Type": codecs.NPY})
                    assert reply.status_code == 200
                    looked = codecs.parse_npy(reply.content)
                    check_consistent(looked[np.argsort(order)])
                if i % 4 == 3:
                    reply = client.post(f"/v1/tables/{name}/lookup",
                                        json={"ids": list(range(ROWS))})
                    check_consistent(np.array(reply.json()["vectors"]))
    except BaseException as error:  # noqa: BLE001 - reported by the main thread
        failures.append(f"thread {seed}: {error!r}")
    pushed.append(total)


@pytest.mark.e2e
def test_concurrent_pushes_lookups_and_applies(live_server: LiveServer, table_name: str) -> None:
    with httpx.Client(base_url=live_server.url, timeout=60.0) as client:
        created = client.post("/v1/tables", json={
            "name": table_name, "num_embeddings": ROWS, "embedding_dim": DIM, "dtype": "float64",
            "init": {"kind": "zeros"}, "optimizer": {"kind": "sgd", "lr": 1.0}})
        assert created.status_code == 201
        pushed: list[int] = []
        failures: list[str] = []
        threads = [threading.Thread(target=worker, args=(live_server.url, table_name, seed,
                                                         pushed, failures))
                   for seed in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        client.post(f"/v1/tables/{table_name}/apply").raise_for_status()
        final = np.array(client.post(f"/v1/tables/{table_name}/lookup",
                                     json={"ids": list(range(ROWS))}).json()["vectors"])
        expected = np.tile(-sum(pushed) * PATTERN, (ROWS, 1))
        assert np.array_equal(final, expected)
        info = client.get(f"/v1/tables/{table_name}").json()
        assert info["pending_rows"] == 0
        metrics = client.get("/metrics").text
        assert (f'embed_rows_pushed_total{{table="{table_name}"}} '
                f"{float(THREADS * PUSHES * 2 * ROWS)}") in metrics
