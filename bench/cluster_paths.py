"""Which data path cluster mode takes, measured: the candidates side by side, in one run.

    .venv/bin/python bench/cluster_paths.py            # V = 1,000,000 x 64 float32, ~2 minutes
    .venv/bin/python bench/cluster_paths.py --quick    # V = 100,000, few repeats

A table of 2 shards on a Ray instance of the benchmark's own, and the same table in a
single-process service; lookups of 32 and 4096 uniform ids through the SDK, the sides
alternating (32: call by call, median latency; 4096: runs, median time per call):

- single process      the single-process service (the peer)
- SDK -> shards       the SDK sends each id to its shard's server over HTTP (what cluster mode
                      does when the client can reach the shard servers)
- front -> shards     the SDK talks to a front, which sends the parts to the shard servers over
                      HTTP (what a client that cannot reach them gets)
- front -> Ray calls  a front (bench/_ray_front.py) that calls each shard server as a Ray actor
                      (ShardServer.lookup: rows through Ray's object transfer)
- Ray call, driver    the same actor calls from this process, no HTTP at all (the floor of the
                      Ray-call path: what a front's Ray calls cost by themselves)

Writes bench/results/cluster_paths.md (--out elsewhere). docs/cluster.md has the figures.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
from _cluster import NAMESPACE, cluster_front, ray_call_front, ray_instance  # noqa: E402
from _processes import TOKEN, service  # noqa: E402
from _report import machine  # noqa: E402
from _rows import latencies  # noqa: E402

from service.client import EmbeddingClient  # noqa: E402
from service.sharding import split  # noqa: E402

TABLE, DIM = "paths", 64


def driver_calls(ids: np.ndarray) -> Callable[[], object]:
    """The shard servers' lookups as Ray actor calls from this process (awaited together)."""
    import ray

    catalog = ray.get_actor("embed-catalog", namespace=NAMESPACE)
    described = ray.get(catalog.describe.remote(TABLE))
    servers = [ray.get_actor(name, namespace=NAMESPACE) for name in described["servers"]]
    where = split(ids, len(servers))
    parts = [(servers[k], ids[where.positions[k]]) for k in range(len(servers))
             if len(where.positions[k])]
    return lambda: ray.get([server.lookup.remote(part) for server, part in parts])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    rows, calls, repeats = (100_000, 60, 3) if args.quick else (1_000_000, 300, 5)
    rng = np.random.default_rng(1)
    ids = {n: rng.integers(0, rows, n) for n in (32, 4096)}
    spec = {"num_embeddings": rows, "embedding_dim": DIM, "seed": 2}
    import ray

    with ray_instance() as address, cluster_front(address) as front, \
            ray_call_front(address) as ray_front, service() as (single_url, _):
        ray.init(address=address, namespace=NAMESPACE, logging_level="warning",
                 configure_logging=False)
        with EmbeddingClient(single_url, token=TOKEN) as single, \
                EmbeddingClient(front.url, token=TOKEN) as routed, \
                EmbeddingClient(front.url, token=TOKEN, route_to_shards=False) as fronted, \
                EmbeddingClient(ray_front.url, token=TOKEN) as ray_fronted:
            single.create_table(TABLE, **spec)
            routed.create_table(TABLE, shards=2, **spec)
            results: dict[int, dict[str, float]] = {}
            for n, these in ids.items():
                expected = single.lookup(TABLE, these)
                for client in (routed, routed, fronted, ray_fronted):
                    assert np.array_equal(client.lookup(TABLE, these), expected)
                sides = {"single process": lambda these=these: single.lookup(TABLE, these),
                         "SDK -> shards": lambda these=these: routed.lookup(TABLE, these),
                         "front -> shards": lambda these=these: fronted.lookup(TABLE, these),
                         "front -> Ray calls":
                             lambda these=these: ray_fronted.lookup(TABLE, these),
                         "Ray call, driver": driver_calls(these)}
                results[n] = latencies(sides, calls if n == 32 else calls // 6, repeats)
        ray.shutdown()
    lines = ["# Cluster mode's data path: the candidates", "",
             f"{rows:,} x {DIM} float32, 2 shards; median per call, sides alternating "
             f"call by call. {machine()['cpu']}.", "",
             "| path | 32 ids | vs single | 4096 ids | vs single |",
             "| --- | --- | --- | --- | --- |"]
    for name in results[32]:
        small, large = results[32][name], results[4096][name]
        lines.append(f"| {name} | {small * 1e6:.0f} us "
                     f"| {small / results[32]['single process']:.2f}x "
                     f"| {large * 1e6:.0f} us | {large / results[4096]['single process']:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cluster_paths.md").write_text(text)


if __name__ == "__main__":
    main()
