"""Where the service stands against Redis, numpy and PyTorch: one command, one run, sixteen rows,
then the load rows.

    make bench                                   # installs what it needs, then runs this
    .venv/bin/python bench/compare.py            # V = 1,000,000 x 64 float32, ~3 minutes,
                                                 # then ~5 minutes of load rows
    .venv/bin/python bench/compare.py --quick    # a smoke run: V = 10,000, few repeats

It starts the service (uvicorn as in production: uvloop, httptools, one worker, log level
warning, a bearer token) and a redis-server on loopback ports, loads the same float32 matrix W
into both (and into numpy and torch in this process), and measures, each figure the median
over repeated runs, the two sides of a row alternating run by run on the same ids:

1. lookup of 4096 uniform ids through EmbeddingClient (.npy) vs Redis MGET: rows/s
2. lookup of 32 ids: median latency vs Redis MGET (requests alternate one by one); beside it,
   a bare ASGI app answering the same bytes on the same uvicorn (bench/_bare_asgi.py)
3. lookup of 65536 ids: rows/s vs in-process numpy W[ids] (and the bare ASGI app)
4. push of 4096 Zipf ids with apply (SGD): rows/s vs torch nn.Embedding(sparse=True) backward
   + optim.SGD step, at torch's faster thread count; the dense reference layer beside it
5. server RSS after 100,000 pushed rows (pending) vs 1.25 x (weights + state) + 120 MB
6. four client processes doing 4096-id lookups: aggregate rows/s vs one client
7. JSON vs .npy for the 4096-id lookup
8. the core alone (EmbeddingTable.push(apply=True) in this process, no HTTP) vs the same
   torch step; the numpy kernels (EMBED_KERNELS=numpy) beside it
9-12. a dynamic table of V live rows against the fixed one: lookup (9 in 10 ids with a row),
   push of Zipf keys + apply, bytes per live row, eviction at V rows (bench/_dynamic_rows.py)
13-16. cluster mode (tables of 2 shards on a Ray instance of the benchmark's own) against the
   single-process service: 4096-id lookups through the SDK, 32-id latency, a 4096 Zipf push
   then an apply, a 4096 Zipf push with apply=true (bench/_cluster_rows.py; --no-cluster
   leaves them out; without ray installed they are skipped, saying so)

Then the load rows (bench/load.py, skipped with --no-load): what one service process carries
under 8 and 64 connections from C load generators (wrk; redis-benchmark for the Redis peer),
against Redis MGET and a bare ASGI app on the same server, requests/s, rows/s, p50/p99.

It prints the tables and writes bench/results/latest.{md,json,png} (--out elsewhere).
Without redis-server (or redis-py) rows 1 and 2 say so and skip their peer; without torch,
row 4 does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _load_report import Targets, render_load, render_load_markdown  # noqa: E402
from _report import machine, render_markdown, render_plot, render_table  # noqa: E402
from _rows import Setup, latencies, run_rows, runs  # noqa: E402
from load import WORKLOADS, LoadSetup, load_json, run_load  # noqa: E402


def cluster_rows_or_why(setup: Setup) -> tuple[list[Any], list[str]]:
    """Rows 13-16, or none and a note saying why (ray is the optional `ray` extra)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return [], ["rows 13-16 (cluster mode) skipped: ray is not installed (pip install "
                    "'.[ray]'; make bench installs it)"]
    from _cluster_rows import cluster_rows

    return cluster_rows(setup, runs, latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: V = 10,000, few repeats (seconds, not minutes)")
    parser.add_argument("--rows", type=int, default=None, help="table rows V (default 1e6)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per figure (median)")
    parser.add_argument("--no-load", action="store_true", help="without the load rows")
    parser.add_argument("--no-cluster", action="store_true",
                        help="without the cluster-mode rows (13-16)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results",
                        help="where latest.md, latest.json and latest.png go")
    args = parser.parse_args()
    setup = Setup.quick() if args.quick else Setup.full()
    if args.rows:
        setup.rows = args.rows
    if args.repeats:
        setup.repeats = args.repeats
    rows, notes = run_rows(setup)
    if not args.no_cluster:
        more, more_notes = cluster_rows_or_why(setup)
        rows += more
        notes += more_notes
    about = machine()
    print(render_table(rows))
    for note in notes:
        print(f"note: {note}")
    load_setup = LoadSetup.quick() if args.quick else LoadSetup()
    load: dict[str, object] = {}
    markdown = render_markdown(rows, notes, about, setup.describe())
    if not args.no_load:
        results, load_notes = run_load(load_setup)
        ids = {workload.name: workload.ids for workload in WORKLOADS}
        print("\n" + render_load(results, ids, Targets()))
        for note in load_notes:
            print(f"note: {note}")
        load = load_json(results, load_notes, load_setup)
        markdown += ("\n## Load: one service process under many connections\n\n"
                     + render_load_markdown(results, ids, Targets()) + "\n"
                     + "".join(f"- {note}\n" for note in load_notes))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.md").write_text(markdown)
    (args.out / "latest.json").write_text(json.dumps(
        {"setup": setup.describe(), "machine": about, "notes": notes,
         "rows": [row.as_dict() for row in rows], **({"load": load} if load else {})},
        indent=1) + "\n")
    plotted = render_plot(rows, args.out / "latest.png", setup.describe())
    print(f"results: {args.out / 'latest.md'}, {args.out / 'latest.json'}"
          + (f", {args.out / 'latest.png'}" if plotted else " (no plot: matplotlib missing)"))


if __name__ == "__main__":
    main()
