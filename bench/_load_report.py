"""bench/load.py's figures as a table (text and Markdown) and its three targets, with ratios
taken within the same run: the service against the bare ASGI app (requests/s) and against Redis
MGET (rows/s)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from _generators import Figures

HEADER = ("workload", "conns", "side", "requests/s", "rows/s", "p50", "p99", "server CPU/req",
          "generator CPU/req", "vs bare", "vs Redis")
SIDE_NAMES = {"service": "service", "before": "service before", "bare": "bare ASGI",
              "redis": "Redis MGET"}


@dataclass(frozen=True)
class Targets:
    """Issue 18's targets: share of the bare app's requests/s for 32-id lookups at 8
    connections, multiple of Redis' rows/s for 4096-id lookups at 8, and the 32-id p99 at 64
    connections over the p50 at 8."""

    small_of_bare: float = 0.5
    large_of_redis: float = 6.0
    tail_over_median: float = 5.0


def _rate(value: float) -> str:
    return f"{value / 1e6:.2f} M" if value >= 1e6 else f"{value:,.0f}"


def _us(value: float) -> str:
    return f"{value / 1000:.1f} ms" if value >= 10_000 else f"{value:.0f} us"


def load_lines(results: dict[str, Any], ids: dict[str, int]) -> list[tuple[str, ...]]:
    lines: list[tuple[str, ...]] = []
    for key, sides in results.items():
        workload, connections = key.rsplit("/", 1)
        count = ids[workload]
        for side, figures in sides.items():
            versus_bare = versus_redis = ""
            if side in ("service", "before") and "bare" in sides:
                ratio = figures.requests_per_second / sides["bare"].requests_per_second
                versus_bare = f"{ratio:.0%}"
            if side in ("service", "before") and "redis" in sides:
                ratio = figures.requests_per_second / sides["redis"].requests_per_second
                versus_redis = f"{ratio:.0%}" if ratio < 1 else f"{ratio:.2f}x"
            cpu = "" if figures.cpu_us is None else f"{figures.cpu_us:.0f} us"
            generator = ("" if figures.generator_cpu_us is None
                         else f"{figures.generator_cpu_us:.0f} us")
            lines.append((workload, connections, SIDE_NAMES[side],
                          f"{figures.requests_per_second:,.0f}",
                          _rate(figures.rows_per_second(count)), _us(figures.p50_us),
                          _us(figures.p99_us), cpu, generator, versus_bare, versus_redis))
    return lines


def target_lines(results: dict[str, Any], targets: Targets) -> list[tuple[str, ...]]:
    """(what, ratio, target, PASS/MISS/SKIP, the same ratio of the other sides) for each of the
    three targets, and the tail's spread at 64 connections (no target)."""

    def get(key: str, side: str) -> Figures | None:
        return results.get(key, {}).get(side)

    def ratio_of(side: str, which: int) -> float | None:
        if which == 0:
            ours, peer = get("lookup 32 ids/8", side), get("lookup 32 ids/8", "bare")
            return ours.requests_per_second / peer.requests_per_second if ours and peer else None
        if which == 1:
            ours, peer = get("lookup 4096 ids/8", side), get("lookup 4096 ids/8", "redis")
            return ours.requests_per_second / peer.requests_per_second if ours and peer else None
        tail, median = get("lookup 32 ids/64", side), get("lookup 32 ids/8", side)
        return tail.p99_us / median.p50_us if tail and median else None

    found = [("32-id lookups, 8 connections: service / bare ASGI requests/s",
              targets.small_of_bare, True),
             ("4096-id lookups, 8 connections: service / Redis MGET rows/s",
              targets.large_of_redis, True),
             ("32-id lookups: p99 at 64 connections / p50 at 8", targets.tail_over_median, False)]
    shown = []
    for which, (what, target, higher) in enumerate(found):
        value = ratio_of("service", which)
        bound = (">= " if higher else "<= ") + _ratio(target)
        verdict = "SKIP" if value is None else (
            "PASS" if (value >= target if higher else value <= target) else "MISS")
        others = [f"{SIDE_NAMES[side]} {_ratio(other)}" for side in ("before", "bare", "redis")
                  if which == 2 or side == "before"
                  if (other := ratio_of(side, which)) is not None]
        shown.append((what, "-" if value is None else _ratio(value), bound, verdict,
                      ", ".join(others)))
    spread = {side: tail.p99_us / tail.p50_us for side in ("service", "before", "bare", "redis")
              if (tail := get("lookup 32 ids/64", side)) is not None}
    if "service" in spread:  # how far the slowest requests trail the others at one load
        shown.append(("32-id lookups at 64 connections: p99 / p50", _ratio(spread["service"]),
                      "-", "info", ", ".join(f"{SIDE_NAMES[side]} {_ratio(value)}"
                                             for side, value in spread.items()
                                             if side != "service")))
    return shown


def _ratio(value: float) -> str:
    return f"{value:.0%}" if value < 1 else f"{value:.2f}x"


def render_load(results: dict[str, Any], ids: dict[str, int], targets: Targets) -> str:
    """The fixed-width table and the targets, for a terminal."""
    if not results:
        return "load rows: none ran"
    lines = [HEADER, *load_lines(results, ids)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    out = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
           for line in lines]
    out.insert(1, "  ".join("-" * width for width in widths))
    out += ["", "load targets:"]
    out += [f"  {what}: {value} (target {bound}) {verdict}" + (f"; {others}" if others else "")
            for what, value, bound, verdict, others in target_lines(results, targets)]
    return "\n".join(out)


def render_load_markdown(results: dict[str, Any], ids: dict[str, int], targets: Targets) -> str:
    if not results:
        return ""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(line) + " |" for line in load_lines(results, ids)]
    lines += ["", "| load target | ratio | target | | the same ratio of |", "|---|---|---|---|---|"]
    lines += [f"| {what} | {value} | {bound} | {verdict} | {others} |"
              for what, value, bound, verdict, others in target_lines(results, targets)]
    return "\n".join(lines) + "\n"
