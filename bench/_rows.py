"""The measurements of bench/compare.py. Each figure is the median over `repeats` runs;
within a row the sides alternate run by run (their order rotating), on the same ids and rows,
so a noisy neighbour on the shared machine hits both sides alike."""

from __future__ import annotations

import multiprocessing
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from _dynamic_rows import dynamic_rows
from _processes import TOKEN, bare_asgi, redis_missing, redis_server, rss_bytes, service
from _push_rows import push_rows
from _report import Row
from peers import load_redis, redis_key, redis_lookup, uniform_ids, zipf_ids

from service.client import EmbeddingClient

DIM, LR, TABLE = 64, 0.05, "bench"


@dataclass
class Setup:
    rows: int
    repeats: int
    calls: dict[str, int]  # calls per run, by measurement
    seconds: float  # length of a run with several client processes
    pushed_rows: int  # row 5

    @classmethod
    def full(cls) -> Setup:
        return cls(1_000_000, 7, {"4096": 40, "32": 300, "65536": 8, "push": 30, "dense": 2,
                                  "json": 10}, 2.0, 100_000)

    @classmethod
    def quick(cls) -> Setup:
        return cls(10_000, 3, {"4096": 5, "32": 40, "65536": 2, "push": 5, "dense": 1,
                               "json": 2}, 0.5, 10_000)

    def describe(self) -> dict[str, Any]:
        return {"rows": self.rows, "dim": DIM, "dtype": "float32", **asdict(self)}


def runs(sides: dict[str, Callable[[], object]], calls: int, repeats: int) -> dict[str, float]:
    """Median seconds per call of each side over `repeats` runs of `calls` calls; sides
    alternate run by run, the first side rotating."""
    names = list(sides)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        sides[name]()  # warm up
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[: repeat % len(names)]:
            start = time.perf_counter()
            for _ in range(calls):
                sides[name]()
            seconds[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(values) for name, values in seconds.items()}


def latencies(sides: dict[str, Callable[[], object]], calls: int, repeats: int) -> dict[str, float]:
    """Median over runs of the median latency of single calls, the sides taking turns call by
    call."""
    names = list(sides)
    medians: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        sides[name]()
    for _ in range(repeats):
        seconds: dict[str, list[float]] = {name: [] for name in names}
        for call in range(calls):
            for name in names[call % len(names):] + names[: call % len(names)]:
                start = time.perf_counter()
                sides[name]()
                seconds[name].append(time.perf_counter() - start)
        for name in names:
            medians[name].append(statistics.median(seconds[name]))
    return {name: statistics.median(values) for name, values in medians.items()}


def rate(rows: float) -> str:
    return f"{rows / 1e6:.2f} M rows/s"


def lookup_worker(url: str, ids: np.ndarray, commands: Any, results: Any) -> None:
    """A client process for row 6: for each command (run seconds, a start time), 4096-id
    lookups until the time is up; reports its count and its own elapsed time."""
    with EmbeddingClient(url, token=TOKEN) as client:
        client.lookup(TABLE, ids)
        while (command := commands.get()) is not None:
            seconds, start_at = command
            time.sleep(max(0.0, start_at - time.time()))
            started, count = time.perf_counter(), 0
            while time.perf_counter() - started < seconds:
                client.lookup(TABLE, ids)
                count += 1
            results.put((count, time.perf_counter() - started))


def concurrent_rate(url: str, ids: np.ndarray, clients: int, setup: Setup) -> float:
    """Aggregate rows/s of `clients` processes looking up together (median over runs)."""
    context = multiprocessing.get_context("spawn")
    commands, results = context.Queue(), context.Queue()
    workers = [context.Process(target=lookup_worker, args=(url, ids, commands, results))
               for _ in range(clients)]
    for worker in workers:
        worker.start()
    rates = []
    try:
        for _ in range(max(3, setup.repeats // 2)):
            start_at = time.time() + 0.3
            for _ in workers:
                commands.put((setup.seconds, start_at))
            done = [results.get(timeout=120) for _ in workers]
            rates.append(sum(count for count, _ in done) * len(ids)
                         / max(elapsed for _, elapsed in done))
    finally:
        for _ in workers:
            commands.put(None)
        for worker in workers:
            worker.join(60)
    return statistics.median(rates)


def run_rows(setup: Setup) -> tuple[list[Row], list[str]]:
    rng = np.random.default_rng(0)
    weights = (rng.standard_normal((setup.rows, DIM), dtype=np.float32) * 0.1)  # (V, dim)
    notes: list[str] = []
    why_no_redis = redis_missing()
    with service() as (url, pid), EmbeddingClient(url, token=TOKEN) as client:
        client.create_table(TABLE, setup.rows, DIM, optimizer={"kind": "sgd", "lr": LR})
        client.import_weights(TABLE, weights)
        table_bytes = client.get_table(TABLE).nbytes  # weights + optimizer state
        lookups = {n: uniform_ids(rng, setup.rows, n) for n in (32, 4096, 65536)}
        for ids in lookups.values():  # the service serves W itself
            assert np.array_equal(client.lookup(TABLE, ids), weights[ids])
        rows: list[Row] = []
        with bare_asgi() as bare_url, EmbeddingClient(bare_url, token=TOKEN) as bare_client:
            bare = {n: (lambda ids=ids: bare_client.lookup(TABLE, ids))
                    for n, ids in lookups.items()}
            if why_no_redis is None:
                with redis_server() as port:
                    more_rows, more_notes = redis_rows(client, port, weights, lookups, setup,
                                                       bare)
            else:
                notes.append(f"rows 1-2 without their peer: {why_no_redis}")
                more_rows, more_notes = redis_rows(client, None, weights, lookups, setup, bare)
            row, note = numpy_row(client, weights, lookups[65536], setup, bare[65536])
            rows += [*more_rows, row]
            notes += [*more_notes, note]
            more_rows, push_notes = push_rows(client, TABLE, weights, LR, rng, setup, runs,
                                              bare_client)
        rows += more_rows
        notes += push_notes
        one = concurrent_rate(url, lookups[4096], 1, setup)
        four = concurrent_rate(url, lookups[4096], 4, setup)
        json_client = EmbeddingClient(url, token=TOKEN, wire="json")
        took = runs({"binary": lambda: client.lookup(TABLE, lookups[4096]),
                     "json": lambda: json_client.lookup(TABLE, lookups[4096])},
                    setup.calls["json"], setup.repeats)
        json_client.close()
        for _ in range(0, setup.pushed_rows, 4096):  # row 5: pending, not applied
            count = min(4096, setup.pushed_rows - _)
            client.push_gradients(TABLE, zipf_ids(rng, setup.rows, count),
                                  rng.standard_normal((count, DIM), dtype=np.float32))
        resident = rss_bytes(pid)
        private, mapped = rss_bytes(pid, "RssAnon"), rss_bytes(pid, "RssFile")
        pending = client.get_table(TABLE).pending_rows
        # rows 9-12 last: row 5's RSS is of the fixed table alone
        more_rows, dynamic_notes = dynamic_rows(client, TABLE, LR, rng, setup, runs)
        rows += more_rows
        notes += dynamic_notes
    limit = 1.25 * table_bytes + 120 * 2**20
    rows.append(Row(5, f"server RSS, {setup.rows:,} x {DIM} + {setup.pushed_rows:,} pushed rows",
                    f"{resident / 2**20:.0f} MB", f"limit {limit / 2**20:.0f} MB",
                    resident / limit, 1.0, higher_is_better=False))
    notes.append(f"row 5: of the RSS, {private / 2**20:.0f} MB private (RssAnon) and "
                 f"{mapped / 2**20:.0f} MB pages of mapped files (RssFile: shared libraries, "
                 "numba's LLVM the largest, shared and reclaimable)")
    notes.append(f"row 5: weights + optimizer state {table_bytes / 2**20:.0f} MB, "
                 f"{pending:,} distinct rows pending after the pushes")
    rows.append(Row(6, "4 client processes, 4096-id lookups", rate(four),
                    f"1 client {rate(one)}", four / one, None))
    rows.append(Row(7, "binary (.npy) vs JSON, 4096-id lookup", rate(4096 / took["binary"]),
                    f"JSON {rate(4096 / took['json'])}", took["json"] / took["binary"], None))
    rows.sort(key=lambda row: row.number)
    return rows, notes


def redis_rows(
    client: EmbeddingClient, port: int | None, weights: np.ndarray,
    lookups: dict[int, np.ndarray], setup: Setup, bare: dict[int, Callable[[], object]],
) -> tuple[list[Row], list[str]]:
    """Rows 1 and 2 (without their peer when port is None). `bare` holds the same client calls
    to a bare ASGI app on the same uvicorn (bench/_bare_asgi.py), by number of ids, timed with
    each row's sides."""
    ours_4096 = lambda: client.lookup(TABLE, lookups[4096])  # noqa: E731
    ours_32 = lambda: client.lookup(TABLE, lookups[32])  # noqa: E731
    sides_4096: dict[str, Callable[[], object]] = {"ours": ours_4096, "bare": bare[4096]}
    sides_32: dict[str, Callable[[], object]] = {"ours": ours_32, "bare": bare[32]}
    if port is not None:
        import redis

        connection = redis.Redis(host="127.0.0.1", port=port)
        load_redis(connection, weights)
        mget = {n: redis_lookup(connection, [redis_key(int(i)) for i in ids], DIM)
                for n, ids in lookups.items()}
        assert np.array_equal(mget[4096](), weights[lookups[4096]])
        sides_4096["redis"], sides_32["redis"] = mget[4096], mget[32]
    took = runs(sides_4096, setup.calls["4096"], setup.repeats)
    latency = latencies(sides_32, setup.calls["32"], setup.repeats)
    if port is not None:
        connection.close()
    us = {name: f"{seconds * 1e6:.0f} us" for name, seconds in latency.items()}
    notes = [f"row 1: a bare ASGI app answering the same 4096 rows (zeros) on the same uvicorn, "
             f"through the same client: {rate(4096 / took['bare'])}"
             + (f" ({took['redis'] / took['bare']:.2f}x Redis)" if "redis" in took else ""),
             f"row 2: a bare ASGI app answering the same bytes on the same uvicorn, through the "
             f"same client: {us['bare']}" + (f" ({latency['bare'] / latency['redis']:.2f}x "
                                             "Redis)" if "redis" in latency else "")]
    if "redis" not in took:
        return [Row(1, "lookup 4096 ids, rows/s", rate(4096 / took["ours"]), "Redis: skipped",
                    None, 12.0),
                Row(2, "lookup 32 ids, median latency", us["ours"], "Redis: skipped", None,
                    2.0, higher_is_better=False)], notes
    return [
        Row(1, "lookup 4096 ids, rows/s", rate(4096 / took["ours"]),
            f"Redis MGET {rate(4096 / took['redis'])}", took["redis"] / took["ours"], 12.0),
        Row(2, "lookup 32 ids, median latency", us["ours"], f"Redis MGET {us['redis']}",
            latency["ours"] / latency["redis"], 2.0, higher_is_better=False),
    ], notes


def numpy_row(
    client: EmbeddingClient, weights: np.ndarray, ids: np.ndarray, setup: Setup,
    bare: Callable[[], object],
) -> tuple[Row, str]:
    """Row 3, and a note with the same lookup from the bare ASGI app (same server, client)."""
    took = runs({"ours": lambda: client.lookup(TABLE, ids), "numpy": lambda: weights[ids],
                 "bare": bare}, setup.calls["65536"], setup.repeats)
    note = (f"row 3: a bare ASGI app answering the same {len(ids)} rows (zeros) on the same "
            f"uvicorn, through the same client: {rate(len(ids) / took['bare'])} "
            f"({took['numpy'] / took['bare']:.0%} of numpy)")
    return Row(3, "lookup 65536 ids, rows/s", rate(65536 / took["ours"]),
               f"numpy W[ids] {rate(65536 / took['numpy'])}", took["numpy"] / took["ours"],
               0.6), note
