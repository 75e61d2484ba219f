"""Exact neighbour search (POST /v1/tables/{name}/neighbors), against plain numpy doing the same.

    .venv/bin/python bench/neighbors.py            # 1,000,000 x 64 float32, about a minute
    .venv/bin/python bench/neighbors.py --quick    # 100,000 x 64, a smoke run
    .venv/bin/python bench/neighbors.py --write    # also bench/results/neighbors.md

The peer is the numpy a user would write for the same answer: cosine of every row with the
query (W @ q divided by the row norms, computed in the call, as the table may have changed since
the last one), argpartition for the k best, a sort of those k. Rows, in queries per second:

1. one query, k = 10: numpy, the service's core (service.core.neighbors, in this process), and
   the service over HTTP (uvicorn, the Python client's most_similar; the query is a row id);
   for reference also numpy on rows normalized once beforehand (right for a frozen table only:
   the service's tables train, so it cannot keep unit rows between two searches);
2. a batch of 64 queries in one call: numpy (one W @ Q), the core, HTTP (most_similar_batch).

Each row prints its ratio to the numpy row measured right before it. Timings are medians of
several runs on a machine shared with other work: read the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._processes import TOKEN, service  # noqa: E402
from service.client import EmbeddingClient  # noqa: E402
from service.core.neighbors import Query, most_similar  # noqa: E402
from service.core.optimizers import make_optimizer  # noqa: E402
from service.core.rows import DenseRows  # noqa: E402
from service.core.table import EmbeddingTable  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "neighbors.md"
K = 10
BATCH = 64


def median_seconds(work: Callable[[], object], runs: int) -> float:
    work()  # warm: caches, pages, BLAS threads
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def numpy_cosine(weights: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(q, k) ids of the k rows of highest cosine with each query, best first."""
    norms = np.linalg.norm(weights, axis=1)  # (n,)
    unit_queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)  # (q, dim)
    scores = (weights @ unit_queries.T) / norms[:, None]  # (n, q)
    best = np.argpartition(-scores, k, axis=0)[:k].T  # (q, k), unordered
    order = np.argsort(-np.take_along_axis(scores.T, best, axis=1), axis=1)
    return np.take_along_axis(best, order, axis=1)


def numpy_unit_rows(unit: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """numpy_cosine on rows already scaled to unit length (a frozen table)."""
    scores = unit @ queries.T  # (n, q)
    best = np.argpartition(-scores, k, axis=0)[:k].T  # (q, k)
    order = np.argsort(-np.take_along_axis(scores.T, best, axis=1), axis=1)
    return np.take_along_axis(best, order, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="100,000 rows, fewer runs")
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS}")
    args = parser.parse_args()
    rows, dim = (100_000 if args.quick else 1_000_000), 64
    runs = 3 if args.quick else 9
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(rows, dim)).astype(np.float32)  # (n, 64)
    query_ids = rng.choice(rows, size=BATCH, replace=False)
    unit = weights / np.linalg.norm(weights, axis=1, keepdims=True)  # (n, 64), frozen-table peer
    table = EmbeddingTable("bench", rows, dim, make_optimizer({"kind": "sgd"}),
                           weights=weights.copy())
    view = DenseRows(table)
    lines = [f"# neighbour search bench, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"load average {os.getloadavg()[0]:.2f}, numpy {np.__version__}",
             f"table: {rows:,} x {dim} float32, cosine, k = {K}; queries per second (median of "
             f"{runs} runs)", "", "| search | numpy | service core | ratio | service HTTP | "
             "ratio | numpy, rows normalized once (frozen table) |",
             "|---|---|---|---|---|---|---|"]

    # the answers agree before anything is timed
    single = [Query([int(query_ids[0])])]
    core_ids = most_similar(view, None, single, K)[0].ids
    numpy_ids = numpy_cosine(weights, weights[query_ids[:1]], K + 1)[0]
    assert core_ids.tolist() == [i for i in numpy_ids if i != query_ids[0]][:K]

    with service() as (url, _), EmbeddingClient(url, token=TOKEN, read_timeout=600) as client:
        client.create_table("bench", rows, dim, seed=0)
        client.import_weights("bench", weights)
        assert client.most_similar("bench", [int(query_ids[0])], k=K).ids.tolist() == \
            core_ids.tolist()
        batch_queries = [Query([int(i)]) for i in query_ids]
        for name, count, numpy_work, core_work, http_work, frozen_work in [
            ("one query", 1,
             lambda: numpy_cosine(weights, weights[query_ids[:1]], K + 1),
             lambda: most_similar(view, None, single, K),
             lambda: client.most_similar("bench", [int(query_ids[0])], k=K),
             lambda: numpy_unit_rows(unit, weights[query_ids[:1]], K + 1)),
            (f"batch of {BATCH}", BATCH,
             lambda: numpy_cosine(weights, weights[query_ids], K + 1),
             lambda: most_similar(view, None, batch_queries, K),
             lambda: client.most_similar_batch(
                 "bench", [{"positive": [int(i)]} for i in query_ids], k=K),
             lambda: numpy_unit_rows(unit, weights[query_ids], K + 1)),
        ]:
            numpy_qps = count / median_seconds(numpy_work, runs)
            core_qps = count / median_seconds(core_work, runs)
            http_qps = count / median_seconds(http_work, runs)
            frozen_qps = count / median_seconds(frozen_work, runs)
            line = (f"| {name} | {numpy_qps:,.1f} | {core_qps:,.1f} | {core_qps / numpy_qps:.2f}x"
                    f" | {http_qps:,.1f} | {http_qps / numpy_qps:.2f}x | {frozen_qps:,.1f} |")
            lines.append(line)
            print(line if len(lines) > 6 else "\n".join(lines), flush=True)
    lines += ["", "ratio: queries per second of the service over numpy's in the same run "
              "(above 1: faster). The core and HTTP rows read the rows through the table "
              "(a copy of each block under the table's lock) and keep memory to one block; "
              "numpy holds the whole (n, q) score matrix."]
    print("\n".join(lines[-2:]))
    if args.write:
        RESULTS.write_text("\n".join(lines) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
