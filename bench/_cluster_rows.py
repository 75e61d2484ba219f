"""Rows 13-16 of bench/compare.py: cluster mode (tables of 2 shards on a Ray instance on this
machine) against the single-process service, the same table (same seed: the same initial
rows, checked), the same ids and gradients, the sides alternating run by run:

13. lookup of 4096 uniform ids through the SDK (it sends each id to its shard's server): rows/s
14. lookup of 32 ids: median latency (calls alternate one by one)
15. push of 4096 Zipf ids, then an apply (SGD): rows/s
16. push of 4096 Zipf ids with apply=true (one step each, through the table's leader): rows/s

The notes give the same lookups through a front alone (the SDK told not to route): what a
client that cannot reach the shard servers gets. bench/cluster_paths.py compares the data paths
that were candidates (docs/cluster.md says why this one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from _cluster import cluster_front, ray_instance
from _processes import TOKEN, service
from _report import Row
from peers import uniform_ids, zipf_ids

from service.client import EmbeddingClient

DIM, LR, TABLE = 64, 0.05, "bench-cluster"


def rate(rows: float) -> str:
    return f"{rows / 1e6:.2f} M rows/s"


def cluster_rows(setup: Any, runs: Callable[..., dict[str, float]],
                 latencies: Callable[..., dict[str, float]]) -> tuple[list[Row], list[str]]:
    rng = np.random.default_rng(3)
    spec = {"num_embeddings": setup.rows, "embedding_dim": DIM, "seed": 5,
            "optimizer": {"kind": "sgd", "lr": LR}}
    with ray_instance() as address, cluster_front(address) as front, \
            service() as (single_url, _), \
            EmbeddingClient(single_url, token=TOKEN) as single, \
            EmbeddingClient(front.url, token=TOKEN) as cluster, \
            EmbeddingClient(front.url, token=TOKEN, route_to_shards=False) as fronted:
        single.create_table(TABLE, **spec)
        cluster.create_table(TABLE, shards=2, **spec)
        ids = {n: uniform_ids(rng, setup.rows, n) for n in (32, 4096)}
        for n in (32, 4096):  # the same rows; the second call is routed (the map is fetched)
            for _ in range(2):
                assert np.array_equal(cluster.lookup(TABLE, ids[n]), single.lookup(TABLE, ids[n]))
        assert TABLE in cluster._router.maps, "the SDK did not get the table's map of shards"
        took = runs({"single": lambda: single.lookup(TABLE, ids[4096]),
                     "cluster": lambda: cluster.lookup(TABLE, ids[4096]),
                     "front": lambda: fronted.lookup(TABLE, ids[4096])},
                    setup.calls["4096"], setup.repeats)
        latency = latencies({"single": lambda: single.lookup(TABLE, ids[32]),
                             "cluster": lambda: cluster.lookup(TABLE, ids[32]),
                             "front": lambda: fronted.lookup(TABLE, ids[32])},
                            setup.calls["32"], setup.repeats)
        push_ids = zipf_ids(rng, setup.rows, 4096)
        grads = rng.standard_normal((4096, DIM), dtype=np.float32) * 0.01  # (4096, dim)

        def push_then_apply(client: EmbeddingClient) -> Callable[[], object]:
            return lambda: (client.push_gradients(TABLE, push_ids, grads), client.apply(TABLE))

        pushed = runs({"single": push_then_apply(single), "cluster": push_then_apply(cluster)},
                      setup.calls["push"], setup.repeats)
        stepped = runs({
            "single": lambda: single.push_gradients(TABLE, push_ids, grads, apply=True),
            "cluster": lambda: cluster.push_gradients(TABLE, push_ids, grads, apply=True)},
            setup.calls["push"], setup.repeats)
        assert np.array_equal(cluster.lookup(TABLE, ids[4096]), single.lookup(TABLE, ids[4096]))
    us = {name: seconds * 1e6 for name, seconds in latency.items()}
    rows = [
        Row(13, "cluster, 2 shards: lookup 4096 ids via SDK, rows/s",
            rate(4096 / took["cluster"]), f"single process {rate(4096 / took['single'])}",
            took["single"] / took["cluster"], 0.70),
        Row(14, "cluster, 2 shards: lookup 32 ids, median latency", f"{us['cluster']:.0f} us",
            f"single process {us['single']:.0f} us", latency["cluster"] / latency["single"],
            1.5, higher_is_better=False),
        Row(15, "cluster, 2 shards: push 4096 Zipf ids, then apply, rows/s",
            rate(4096 / pushed["cluster"]), f"single process {rate(4096 / pushed['single'])}",
            pushed["single"] / pushed["cluster"], 0.60),
        Row(16, "cluster, 2 shards: push 4096 Zipf ids, apply=true, rows/s",
            rate(4096 / stepped["cluster"]), f"single process {rate(4096 / stepped['single'])}",
            stepped["single"] / stepped["cluster"], 0.60),
    ]
    notes = [
        f"rows 13-16: through a front alone (SDK not routing: a client that cannot reach the "
        f"shard servers): 4096 ids {rate(4096 / took['front'])} "
        f"({took['single'] / took['front']:.0%} of single process), 32 ids {us['front']:.0f} us "
        f"({latency['front'] / latency['single']:.2f}x)",
        "rows 13-16: the SDK, the front, both shard servers, the single-process service, Ray's "
        "own processes and the measuring loop share this machine's cores (docs/cluster.md says "
        "what that hides)",
    ]
    return rows, notes
