"""Prometheus metrics of one app, served at /metrics.

Every app gets its own CollectorRegistry (several apps in one test process never clash). Labels
are the route template, method, status and table name: never an id, never a value of a table.

- request counts and latency come from `RequestObserver` (service.api.middleware.observe), per
  request, through series bound once per label set (`series`);
- rows looked up / pushed / updated are counted by the routes (`count_rows`), per table object,
  and read at scrape time, so a deleted table's series disappear with it;
- table bytes, pending rows and steps are read from the registry at scrape time (never stale),
  as are the bytes counted against the memory budget and those of the idempotency store;
- connections the server closes itself (timeouts, over max_connections) are counted by the
  HTTP protocol (service.api.connections) through `count_closed_connection`;
- snapshots report through `AppMetrics.time_snapshot`:

    with metrics_of(request.app).time_snapshot("save"):
        write_the_snapshot()        # duration observed; an exception counts as a failure
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from service.api.middleware.replies import ReplyStore
from service.api.middleware.routes import route_policy
from service.core.registry import TableRegistry
from service.core.table_base import Table

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
SNAPSHOT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
disable_created_metrics()  # no *_created series: they double the output and nobody graphs them


@dataclass
class RowCounts:
    looked_up: int = 0
    pushed: int = 0
    updated: int = 0


class TableCollector(Collector):
    """Per-table gauges and row counters, read from the live tables at each scrape."""

    def __init__(
        self,
        registry: TableRegistry,
        rows: weakref.WeakKeyDictionary[Table, RowCounts],
        replies: ReplyStore,
    ) -> None:
        self.registry = registry
        self.rows = rows
        self.replies = replies

    def collect(self) -> Iterable[Any]:
        tables = list(self.registry)
        count = GaugeMetricFamily("embed_tables", "Tables the service holds.")
        count.add_metric([], len(tables))
        budget = GaugeMetricFamily(
            "embed_memory_budget_bytes", "Bytes all tables may use (EMBED_MEMORY_BUDGET_BYTES)."
        )
        budget.add_metric([], self.registry.memory_budget_bytes)
        used = GaugeMetricFamily(
            "embed_memory_used_bytes", "Bytes counted against the memory budget: tables, "
            "tables being created, remembered idempotent replies.",
        )
        used.add_metric([], self.registry.memory_used_bytes)
        replies = GaugeMetricFamily(
            "embed_idempotency_bytes", "Bytes of remembered Idempotency-Key replies "
            "(EMBED_IDEMPOTENCY_MAX_BYTES bounds them).",
        )
        replies.add_metric([], self.replies.nbytes)
        keys = GaugeMetricFamily("embed_idempotency_keys", "Idempotency-Key replies remembered.")
        keys.add_metric([], len(self.replies))
        size = GaugeMetricFamily(
            "embed_table_bytes", "Bytes a table holds (weights, optimizer state, pending).",
            labels=["table"],
        )
        pending = GaugeMetricFamily(
            "embed_table_pending_rows", "Distinct rows with a gradient awaiting apply.",
            labels=["table"],
        )
        step = GaugeMetricFamily("embed_table_step", "Optimizer steps applied.", labels=["table"])
        counters = {
            field: CounterMetricFamily(
                f"embed_rows_{field}", f"Rows {field.replace('_', ' ')} (ids counted with "
                "duplicates; updated = rows the optimizer changed).", labels=["table"],
            )
            for field in ("looked_up", "pushed", "updated")
        }
        for table in tables:
            labels = [table.name]
            size.add_metric(labels, table.nbytes)
            pending.add_metric(labels, table.pending_rows)
            step.add_metric(labels, table.step)
            counts = self.rows.get(table) or RowCounts()
            for field, family in counters.items():
                family.add_metric(labels, getattr(counts, field))
        yield from (count, budget, used, replies, keys, size, pending, step, *counters.values())


class AppMetrics:
    """The metric objects of one app. Reach it with `metrics_of(app)`."""

    def __init__(self, tables: TableRegistry, replies: ReplyStore) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "embed_http_requests", "HTTP requests served, by route template and status.",
            ["method", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "embed_http_request_duration_seconds", "Time from request start to the last byte "
            "of the reply.", ["method", "route", "status"], buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.snapshot_duration = Histogram(
            "embed_snapshot_duration_seconds", "Time a snapshot operation took (save, restore).",
            ["operation"], buckets=SNAPSHOT_BUCKETS, registry=self.registry,
        )
        self.snapshot_failures = Counter(
            "embed_snapshot_failures", "Snapshot operations that raised.", ["operation"],
            registry=self.registry,
        )
        self.closed_connections = Counter(
            "embed_http_connections_closed", "Connections the server closed itself: "
            "head_timeout, body_timeout (408), too_many_connections (503).", ["reason"],
            registry=self.registry,
        )
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.rows: weakref.WeakKeyDictionary[Table, RowCounts] = (
            weakref.WeakKeyDictionary()
        )
        self.registry.register(TableCollector(tables, self.rows, replies))
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes and friends

    def series(self, method: str, route: str, status: int) -> tuple[Any, Any]:
        """The request counter's and the latency histogram's series of these labels, bound once
        and then taken from a dict: prometheus-client's labels() checks and joins the label
        values and takes a lock on every call. The labels are bounded (methods, route
        templates, statuses), so the dict is too."""
        key = (method, route, status)
        bound = self._series.get(key)
        if bound is None:
            labels = (method, route, str(status))
            bound = self._series[key] = (self.requests.labels(*labels),
                                         self.latency.labels(*labels))
        return bound

    def count_closed_connection(self, reason: str) -> None:
        self.closed_connections.labels(reason).inc()

    def count_rows(
        self, table: Table, *, looked_up: int = 0, pushed: int = 0, updated: int = 0
    ) -> None:
        counts = self.rows.get(table)
        if counts is None:
            counts = self.rows[table] = RowCounts()
        counts.looked_up += looked_up
        counts.pushed += pushed
        counts.updated += updated

    @contextmanager
    def time_snapshot(self, operation: str) -> Iterator[None]:
        """Observe how long the block takes; count it as a failure if it raises."""
        started = time.perf_counter()
        try:
            yield
        except BaseException:
            self.snapshot_failures.labels(operation).inc()
            raise
        finally:
            self.snapshot_duration.labels(operation).observe(time.perf_counter() - started)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def metrics_of(app: FastAPI) -> AppMetrics:
    metrics: AppMetrics = app.state.metrics  # starlette's State is untyped; create_app set it
    return metrics


def note_request(request: Request, table: Table, rows: int, **counts: int) -> None:
    """What a route tells the access log (table, rows) and the row counters (counts)."""
    request.scope.setdefault("embed.log", {}).update(table=table.name, rows=rows)
    if counts:
        metrics_of(request.app).count_rows(table, **counts)


router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                     "description": "Prometheus text format."}},
)
@route_policy(open=True)
async def metrics(request: Request) -> Response:
    """Prometheus metrics: requests and latency by route and status, rows and bytes by table.
    Open even when a token is set: it shows table names, never ids or values."""
    return Response(metrics_of(request.app).exposition(), media_type=CONTENT_TYPE_LATEST)
