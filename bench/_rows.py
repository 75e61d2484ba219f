"""The seven measurements of bench/compare.py. Each figure is the median over `repeats` runs;
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
from _processes import TOKEN, redis_missing, redis_server, rss_bytes, service
from _report import Row
from peers import (
    DenseReference,
    TorchSparseSGD,
    load_redis,
    redis_key,
    redis_lookup,
    uniform_ids,
    zipf_ids,
)

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
        if why_no_redis is None:
            with redis_server() as port:
                rows += redis_rows(client, port, weights, lookups, setup)
        else:
            notes.append(f"rows 1-2 without their peer: {why_no_redis}")
            rows += redis_rows(client, None, weights, lookups, setup)
        rows.append(numpy_row(client, weights, lookups[65536], setup))
        push_row, push_notes = torch_row(client, weights, rng, setup)
        rows.append(push_row)
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
        pending = client.get_table(TABLE).pending_rows
    limit = 1.25 * table_bytes + 120 * 2**20
    rows.append(Row(5, f"server RSS, {setup.rows:,} x {DIM} + {setup.pushed_rows:,} pushed rows",
                    f"{resident / 2**20:.0f} MB", f"limit {limit / 2**20:.0f} MB",
                    resident / limit, 1.0, higher_is_better=False))
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
    lookups: dict[int, np.ndarray], setup: Setup,
) -> list[Row]:
    """Rows 1 and 2 (without their peer when port is None)."""
    ours_4096 = lambda: client.lookup(TABLE, lookups[4096])  # noqa: E731
    ours_32 = lambda: client.lookup(TABLE, lookups[32])  # noqa: E731
    if port is None:
        took = runs({"ours": ours_4096}, setup.calls["4096"], setup.repeats)
        latency = latencies({"ours": ours_32}, setup.calls["32"], setup.repeats)
        return [Row(1, "lookup 4096 ids, rows/s", rate(4096 / took["ours"]), "Redis: skipped",
                    None, 4.0), Row(2, "lookup 32 ids, median latency",
                                    f"{latency['ours'] * 1e6:.0f} us", "Redis: skipped", None,
                                    2.0, higher_is_better=False)]
    import redis

    connection = redis.Redis(host="127.0.0.1", port=port)
    load_redis(connection, weights)
    mget = {n: redis_lookup(connection, [redis_key(int(i)) for i in ids], DIM)
            for n, ids in lookups.items()}
    assert np.array_equal(mget[4096](), weights[lookups[4096]])
    took = runs({"ours": ours_4096, "redis": mget[4096]}, setup.calls["4096"], setup.repeats)
    latency = latencies({"ours": ours_32, "redis": mget[32]}, setup.calls["32"], setup.repeats)
    connection.close()
    return [
        Row(1, "lookup 4096 ids, rows/s", rate(4096 / took["ours"]),
            f"Redis MGET {rate(4096 / took['redis'])}", took["redis"] / took["ours"], 4.0),
        Row(2, "lookup 32 ids, median latency", f"{latency['ours'] * 1e6:.0f} us",
            f"Redis MGET {latency['redis'] * 1e6:.0f} us", latency["ours"] / latency["redis"],
            2.0, higher_is_better=False),
    ]


def numpy_row(
    client: EmbeddingClient, weights: np.ndarray, ids: np.ndarray, setup: Setup
) -> Row:
    took = runs({"ours": lambda: client.lookup(TABLE, ids), "numpy": lambda: weights[ids]},
                setup.calls["65536"], setup.repeats)
    return Row(3, "lookup 65536 ids, rows/s", rate(65536 / took["ours"]),
               f"numpy W[ids] {rate(65536 / took['numpy'])}", took["numpy"] / took["ours"], 0.15)


def torch_row(
    client: EmbeddingClient, weights: np.ndarray, rng: np.random.Generator, setup: Setup
) -> tuple[Row, list[str]]:
    """Row 4: push + apply of 4096 Zipf ids, one request (apply=true), vs torch and dense."""
    ids = zipf_ids(rng, setup.rows, 4096)
    grads = rng.standard_normal((4096, DIM), dtype=np.float32) * 0.01  # (4096, dim)
    sides: dict[str, Callable[[], object]] = {
        "ours": lambda: client.push_gradients(TABLE, ids, grads, apply=True),
        "ours, push then apply": lambda: (client.push_gradients(TABLE, ids, grads),
                                          client.apply(TABLE)),
    }
    notes = [f"row 4: {len(np.unique(ids))} distinct rows among the 4096 Zipf ids "
             f"(exponent 1.1); the service's sums are bit-identical to np.add.at"]
    try:
        layer = TorchSparseSGD(weights, LR)
        torch_steps = [layer.prepare(ids, grads) for _ in range(setup.calls["push"] + 1)]
        sides["torch"] = lambda: torch_steps.pop()()
    except ImportError:
        notes.append("row 4 without its peer: torch not installed (the bench extra has it)")
    took = runs(sides, setup.calls["push"], 1 if "torch" in sides else setup.repeats)
    if "torch" in sides:  # each run needs fresh torch graphs: repeat run by run
        all_runs: dict[str, list[float]] = {name: [took[name]] for name in sides}
        for _ in range(setup.repeats - 1):
            torch_steps[:] = [layer.prepare(ids, grads) for _ in range(setup.calls["push"] + 1)]
            for name, seconds in runs(sides, setup.calls["push"], 1).items():
                all_runs[name].append(seconds)
        took = {name: statistics.median(values) for name, values in all_runs.items()}
    dense = DenseReference(weights, LR)
    dense_took = runs({"dense": lambda: dense.step(ids, grads)}, setup.calls["dense"],
                      max(1, setup.repeats // 2))["dense"]
    notes.append(f"row 4: dense reference layer {rate(4096 / dense_took)}; the service does "
                 f"{dense_took / took['ours']:.0f}x its rows/s; push then apply as two requests "
                 f"{rate(4096 / took['ours, push then apply'])}")
    if "torch" not in sides:
        return Row(4, "push 4096 Zipf ids + apply (SGD), rows/s", rate(4096 / took["ours"]),
                   "torch: skipped", None, 0.5), notes
    return Row(4, "push 4096 Zipf ids + apply (SGD), rows/s", rate(4096 / took["ours"]),
               f"torch sparse+SGD {rate(4096 / took['torch'])}", took["torch"] / took["ours"],
               0.5), notes
