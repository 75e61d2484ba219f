"""The C load generators of bench/load.py, each run once and read back as figures: wrk (with
bench/load.lua) against an HTTP server, redis-benchmark against a redis-server. Both run one
thread on loopback; their latencies are per request, from the generator's side."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import resource
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LUA = Path(__file__).with_name("load.lua")


@dataclass(frozen=True)
class Figures:
    """One run of a load generator."""

    requests_per_second: float
    p50_us: float
    p99_us: float
    requests: int = 0  # completed in the run
    cpu_us: float | None = None  # the server's CPU time (user + system) per request, if known
    generator_cpu_us: float | None = None  # the load generator's, per request
    seconds: float = 0.0  # the run's length

    def rows_per_second(self, ids: int) -> float:
        return self.requests_per_second * ids


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far, user + system, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU time of this process's finished children (the generators), user + system."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def generated(command: list[str], timeout: float) -> tuple[subprocess.CompletedProcess[str],
                                                             float, float]:
    """Run a load generator: its completed process, its CPU seconds and its wall seconds."""
    cpu, started = children_cpu_seconds(), time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    return run, children_cpu_seconds() - cpu, time.perf_counter() - started


def with_cpu(pid: int, run: Callable[[], Figures]) -> Figures:
    """run()'s figures with the CPU the process `pid` spent per request meanwhile."""
    before = cpu_seconds(pid)
    figures = run()
    spent = cpu_seconds(pid) - before
    return dataclasses.replace(figures, cpu_us=spent / max(1, figures.requests) * 1e6)


def missing(*tools: str) -> str | None:
    """Why the load rows cannot run here, or None."""
    absent = [tool for tool in tools if shutil.which(tool) is None]
    if absent:
        return (f"{', '.join(absent)} not found (Debian: apt-get install "
                f"{' '.join('redis-tools' if t == 'redis-benchmark' else t for t in absent)}; "
                "`make bench` installs them)")
    return None


def wrk(url: str, path: str, bodies: Path, body_bytes: int, connections: int, seconds: float,
        token: str | None) -> Figures:
    """wrk posting the bodies of `bodies` (each `body_bytes` long) in turn to url + path, one
    thread, `connections` connections, for `seconds` (whole, at least 1). RuntimeError if any
    request failed."""
    run, cpu, _ = generated(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
         "-s", str(LUA), url, "--", path, str(bodies), str(body_bytes), token or "-"],
        timeout=seconds + 120,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if run.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({run.returncode}):\n{run.stdout}\n{run.stderr}")
    result = json.loads(lines[-1])
    failed = {key: value for key, value in result.items()
              if key.endswith(("errors", "timeouts")) and value}
    if failed:
        raise RuntimeError(f"wrk against {url}{path}: failed requests {failed}")
    requests = max(1, result["requests"])
    return Figures(result["requests"] / (result["duration_us"] / 1e6), result["p50_us"],
                   result["p99_us"], result["requests"], generator_cpu_us=cpu / requests * 1e6,
                   seconds=result["duration_us"] / 1e6)


def redis_benchmark(port: int, keys: int, keyspace: int, connections: int,
                    requests: int) -> Figures:
    """redis-benchmark running `requests` MGETs of `keys` random keys each ("e:" and 12 digits,
    each key drawn anew for every request from 0..keyspace-1), one thread, `connections`
    connections."""
    command = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(connections),
               "-n", str(requests), "-r", str(keyspace), "--csv", "MGET",
               *(["e:__rand_int__"] * keys)]
    run, cpu, seconds = generated(command, timeout=600)
    rows = list(csv.DictReader(io.StringIO(run.stdout)))
    if run.returncode != 0 or not rows:
        raise RuntimeError(f"redis-benchmark failed ({run.returncode}):\n{run.stdout}\n"
                           f"{run.stderr}")
    row = rows[-1]
    return Figures(float(row["rps"]), float(row["p50_latency_ms"]) * 1000,
                   float(row["p99_latency_ms"]) * 1000, requests,
                   generator_cpu_us=cpu / requests * 1e6, seconds=seconds)


def redis_key(row: int) -> bytes:
    """The key redis-benchmark's __rand_int__ makes of a row number: 12 digits."""
    return b"e:%012d" % row
