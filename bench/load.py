"""What one service process carries under many connections: requests/s, rows/s and p50/p99
latency from C load generators, against Redis and against a bare ASGI app on the same server.

    .venv/bin/python bench/load.py               # V = 1,000,000 x 64 float32, ~4 minutes
    .venv/bin/python bench/load.py --quick       # a smoke run (V = 10,000, short runs)
    bench/compare.py runs it after its own rows (`make bench`), in the same run.

Three servers on loopback, each started and stopped here: the service (`python -m service.api`
through service.api.process, with a bearer token, EMBED_LOG_LEVEL=warning as bench/compare.py,
keep-alive 60 s), a bare ASGI app on the same server configuration (bench/_bare_asgi.py: it
reads the body and answers as many bytes, nothing else: the floor), and a redis-server holding
the same matrix one 256-byte row per key. Workloads, each at 8 and 64 connections:

- lookups of 32 and of 4096 uniform ids (.npy bodies, each request one of a few hundred
  pre-built bodies), against the bare app and against redis-benchmark's MGET of as many
  random keys (drawn anew for every request);
- pushes of 4096 Zipf ids with apply=true (ids.npy + grads.npy, SGD), against the bare app.

wrk and redis-benchmark run one thread each. The sides of a workload alternate run by run, the
first rotating, `repeats` times; each figure is the median. The machine's other load is noted.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _generators import Figures, missing, redis_benchmark, redis_key, with_cpu, wrk  # noqa: E402
from _load_report import Targets, render_load  # noqa: E402
from _processes import TOKEN, redis_server  # noqa: E402
from _profile import profiled, summary  # noqa: E402
from peers import uniform_ids, zipf_ids  # noqa: E402

from service.api.process import ServiceProcess  # noqa: E402
from service.client import EmbeddingClient  # noqa: E402

DIM, LR, TABLE = 64, 0.01, "bench"
SERVICE_ENV = {"EMBED_TOKEN": TOKEN, "EMBED_LOG_LEVEL": "warning",
               "EMBED_SNAPSHOT_ON_SHUTDOWN": "false", "EMBED_KEEP_ALIVE_SECONDS": "60"}


@dataclass(frozen=True)
class Workload:
    name: str
    ids: int
    path: str  # after /v1/tables/<table>
    bodies: int  # distinct pre-built bodies, posted in turn
    redis: bool  # Redis MGET is a peer


WORKLOADS = (Workload("lookup 32 ids", 32, "/lookup", 256, True),
             Workload("lookup 4096 ids", 4096, "/lookup", 32, True),
             Workload("push 4096 ids + apply", 4096, "/gradients?apply=true", 8, False))


@dataclass
class LoadSetup:
    rows: int = 1_000_000
    seconds: float = 3.0
    repeats: int = 3
    connections: tuple[int, ...] = (8, 64)
    env: dict[str, str] = field(default_factory=dict)  # more EMBED_* for the service
    versus: Path | None = None  # another checkout: its service is measured too ("before")

    @classmethod
    def quick(cls) -> LoadSetup:
        return cls(rows=10_000, seconds=1.0, repeats=1)

    def describe(self) -> dict[str, Any]:
        return {"rows": self.rows, "dim": DIM, "seconds": self.seconds, "repeats": self.repeats,
                "connections": list(self.connections), "generators": "wrk -t1, "
                "redis-benchmark (1 thread)", **({"env": self.env} if self.env else {}),
                **({"versus": str(self.versus)} if self.versus else {})}


def bodies_file(directory: Path, workload: Workload, rows: int, rng: np.random.Generator,
                ) -> tuple[Path, int]:
    """The workload's bodies back to back in one file, and the length of one."""
    bodies = []
    for _ in range(workload.bodies):
        stream = io.BytesIO()
        if workload.path.startswith("/lookup"):
            np.save(stream, uniform_ids(rng, rows, workload.ids))
        else:
            np.save(stream, zipf_ids(rng, rows, workload.ids))
            grads = rng.standard_normal((workload.ids, DIM), dtype=np.float32) * 0.01
            np.save(stream, grads)  # (ids, DIM) float32
        bodies.append(stream.getvalue())
    assert len({len(body) for body in bodies}) == 1
    path = directory / f"{workload.name.replace(' ', '-')}.bodies"
    path.write_bytes(b"".join(bodies))
    return path, len(bodies[0])


def load_redis(port: int, weights: np.ndarray, batch: int = 10_000) -> int:
    """Every row under redis-benchmark's key for it (the same 256 bytes of float32); the
    server's process id."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    pipeline = client.pipeline(transaction=False)
    for start in range(0, len(weights), batch):
        block = weights[start : start + batch]
        pipeline.mset({redis_key(start + i): block[i].tobytes() for i in range(len(block))})
        pipeline.execute()
    probe = [17, len(weights) - 1]
    values = client.mget([redis_key(i) for i in probe])
    assert np.array_equal(np.frombuffer(b"".join(values), np.float32).reshape(2, DIM),
                          weights[probe])
    pid = int(client.info("server")["process_id"])
    client.close()
    return pid


@contextmanager
def servers(setup: LoadSetup, weights: np.ndarray, redis: bool) -> Iterator[dict[str, Any]]:
    """The service (the table loaded with `weights`), the bare app and (if `redis`) a
    redis-server holding the same rows."""
    with ExitStack() as stack:
        env = {**SERVICE_ENV, **setup.env}
        service = stack.enter_context(ServiceProcess(env=env))
        bare = stack.enter_context(ServiceProcess(env=env, app="bench._bare_asgi:app"))
        found = {"service": service, "bare": bare}
        if setup.versus is not None:
            found["before"] = stack.enter_context(ServiceProcess(env=env, cwd=setup.versus))
        for side in ("service", "before"):
            if side in found:
                with EmbeddingClient(found[side].url, token=TOKEN) as client:
                    client.create_table(TABLE, setup.rows, DIM,
                                        optimizer={"kind": "sgd", "lr": LR})
                    client.import_weights(TABLE, weights)
        if redis:
            found["redis"] = port = stack.enter_context(redis_server())
            found["redis_pid"] = load_redis(port, weights)
        yield found


def measure(setup: LoadSetup, servers: dict[str, Any], workload: Workload, bodies: Path,
            body_bytes: int, connections: int) -> dict[str, Figures]:
    """Median figures of each side of one workload at one connection count."""
    path = f"/v1/tables/{TABLE}{workload.path}"

    def http_side(name: str) -> Callable[[], Figures]:
        process = servers[name]
        token = None if name == "bare" else TOKEN
        return lambda: with_cpu(process.pid, lambda: wrk(
            process.url, path, bodies, body_bytes, connections, setup.seconds, token))

    sides = {name: http_side(name) for name in ("service", "before", "bare") if name in servers}
    if workload.redis and "redis" in servers:
        requests = [max(connections * 4, 200)]  # calibrated by the first run: ~`seconds` long

        def mget() -> Figures:
            figures = redis_benchmark(servers["redis"], workload.ids, setup.rows, connections,
                                      requests[0])
            requests[0] = max(connections * 4, int(figures.requests_per_second * setup.seconds))
            return figures

        mget()  # calibration
        sides["redis"] = lambda: with_cpu(servers["redis_pid"], mget)
    runs: dict[str, list[Figures]] = {name: [] for name in sides}
    names = list(sides)
    for repeat in range(setup.repeats):
        for name in names[repeat % len(names):] + names[: repeat % len(names)]:
            runs[name].append(sides[name]())
    return {name: median_figures(figures) for name, figures in runs.items()}


def median_figures(runs: list[Figures]) -> Figures:
    """Each figure's median over the runs (requests: their sum)."""
    def median(values: list[float | None]) -> float | None:
        known = [value for value in values if value is not None]
        return statistics.median(known) if known else None

    return Figures(statistics.median(run.requests_per_second for run in runs),
                   statistics.median(run.p50_us for run in runs),
                   statistics.median(run.p99_us for run in runs), sum(run.requests for run in runs),
                   median([run.cpu_us for run in runs]),
                   median([run.generator_cpu_us for run in runs]),
                   sum(run.seconds for run in runs))


def run_load(setup: LoadSetup, names: list[str] | None = None,
             ) -> tuple[dict[str, Any], list[str]]:
    """Every workload at every connection count: {"workload/connections": {side: Figures}},
    and notes (what could not run, the machine's load)."""
    notes: list[str] = []
    why_not = missing("wrk")
    if why_not:
        return {}, [f"load rows skipped: {why_not}"]
    why_no_redis = missing("redis-server", "redis-benchmark")
    if why_no_redis:
        notes.append(f"load rows without Redis: {why_no_redis}")
    rng = np.random.default_rng(1)
    weights = rng.standard_normal((setup.rows, DIM), dtype=np.float32) * 0.1  # (V, DIM)
    results: dict[str, Any] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-load-") as directory, \
            servers(setup, weights, redis=why_no_redis is None) as running:
        for workload in WORKLOADS:
            if names and workload.name not in names:
                continue
            bodies, body_bytes = bodies_file(Path(directory), workload, setup.rows, rng)
            for connections in setup.connections:
                results[f"{workload.name}/{connections}"] = measure(
                    setup, running, workload, bodies, body_bytes, connections)
    notes.append(f"load average (1 min) {load_before:.1f} before the load rows, "
                 f"{os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores; the generators "
                 "share the cores with the server")
    return results, notes


def profile_load(setup: LoadSetup, out: Path, names: list[str]) -> None:
    """py-spy on the service (and the --versus checkout's, alternating) during one wrk run of
    each named workload at the first connection count: out/profile-<side>-<workload>.txt (raw
    stacks) and .summary.txt, the summaries printed."""
    rng = np.random.default_rng(1)
    weights = rng.standard_normal((setup.rows, DIM), dtype=np.float32) * 0.1  # (V, DIM)
    out.mkdir(parents=True, exist_ok=True)
    connections = setup.connections[0]
    with tempfile.TemporaryDirectory(prefix="bench-load-") as directory, \
            servers(setup, weights, redis=False) as running:
        for workload in WORKLOADS:
            if names and workload.name not in names:
                continue
            bodies, body_bytes = bodies_file(Path(directory), workload, setup.rows, rng)
            path = f"/v1/tables/{TABLE}{workload.path}"
            for side in ("before", "service"):
                if side not in running:
                    continue
                service = running[side]
                wrk(service.url, path, bodies, body_bytes, connections, 1, TOKEN)  # warm up
                raw = out / f"profile-{side}-{workload.name.replace(' ', '-')}.txt"
                with profiled(service.pid, raw, setup.seconds):
                    figures = with_cpu(service.pid, partial(
                        wrk, service.url, path, bodies, body_bytes, connections, setup.seconds,
                        TOKEN))
                text = summary(raw)
                raw.with_suffix(".summary.txt").write_text(text + "\n")
                print(f"== {side}: {workload.name}, {connections} connections, under py-spy: "
                      f"{figures.requests_per_second:,.0f} requests/s, "
                      f"{figures.cpu_us:.0f} us CPU a request\n{text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (V = 10,000, 1 s runs)")
    parser.add_argument("--seconds", type=float, help="length of one generator run")
    parser.add_argument("--connections", type=int, action="append", help="instead of 8 and 64")
    parser.add_argument("--repeats", type=int, help="runs per side (median)")
    parser.add_argument("--env", action="append", default=[], metavar="EMBED_X=VALUE",
                        help="another setting for the service (e.g. EMBED_LOG_LEVEL=info)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--versus", type=Path, metavar="CHECKOUT", help="also measure the "
                        "service of another checkout of this repository (e.g. a git worktree "
                        "of main): the before of a change, alternating with the after")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="instead of the table: "
                        "py-spy on the service under each workload (8 connections), into DIR")
    parser.add_argument("--workload", action="append", default=[], choices=[
        w.name for w in WORKLOADS], help="only these workloads")
    args = parser.parse_args()
    setup = LoadSetup.quick() if args.quick else LoadSetup()
    setup.seconds = args.seconds or setup.seconds
    setup.repeats = args.repeats or setup.repeats
    setup.env = dict(item.split("=", 1) for item in args.env)
    setup.versus = args.versus
    setup.connections = tuple(args.connections or setup.connections)
    if args.profile:
        profile_load(setup, args.profile, args.workload)
        return
    results, notes = run_load(setup, args.workload)
    print(render_load(results, {workload.name: workload.ids for workload in WORKLOADS}, Targets()))
    for note in notes:
        print(f"note: {note}")
    if args.json:
        args.json.write_text(json.dumps(load_json(results, notes, setup), indent=1) + "\n")


def load_json(results: dict[str, Any], notes: list[str], setup: LoadSetup) -> dict[str, Any]:
    return {"setup": setup.describe(), "notes": notes,
            "results": {key: {side: vars(figures) for side, figures in sides.items()}
                        for key, sides in results.items()}}


if __name__ == "__main__":
    main()
