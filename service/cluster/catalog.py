"""The catalog: the one actor of a service's namespace that knows its tables and shard servers.

It holds the data directory (its lock: one service per directory, service.core.directory_lock),
and decides everything that is not a request's: which shard servers hold which table (taking
them from a pool of idle ones, so a create starts no process), where each server is (servers
tell it when they start or restart), restoring the data directory's tables when the service
starts (re-sharded if asked), snapshots (every table's shards at one instant, committed as
one snapshot: service.core.sharded_snapshots, service.core.snapshot_store), deletions, and the
counts of what shard restarts lost (/metrics). Fronts ask it for a table's map and cache it.

Its state is the shard servers' (they outlive it: detached actors): a catalog that Ray
restarts asks every server in its namespace what it holds. A threaded actor: a server's
start-up call reaches it while it waits for that server.

Its parts: the shard servers (service.cluster.catalog_servers), writing and reading snapshots
(service.cluster.catalog_snapshots), what it keeps of tables and servers
(service.cluster.catalog_records); this module starts it and keeps its tables.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import ray

from service.api.settings import Settings
from service.cluster.catalog_records import Losses, ServerRecord, TableRecord
from service.cluster.catalog_servers import CatalogServers
from service.cluster.catalog_snapshots import spec_of, write_table_snapshot
from service.cluster.placement import TableSpec
from service.cluster.runtime import SERVER_PREFIX, result
from service.core.errors import (
    BudgetExceeded,
    EmbeddingServiceError,
    SnapshotDamaged,
    TableExists,
    TableNotFound,
)
from service.core.registry import check_table_name
from service.core.sharded_snapshots import is_sharded
from service.core.snapshot_store import SnapshotStore, committed_snapshot

log = logging.getLogger("service.cluster")


def catalog_actor() -> Any:
    return ray.remote(Catalog)


class Catalog(CatalogServers):
    def __init__(self, settings: dict[str, Any], owner: bool) -> None:
        self.payload = settings
        self.settings = Settings(**settings)
        self.owner = owner
        self.namespace = ray.get_runtime_context().namespace
        self.store = SnapshotStore(Path(self.settings.data_dir))
        self.lock = threading.RLock()  # tables, servers, idle
        self.run_lock = threading.Lock()  # one snapshot run at a time
        self.tables: dict[str, TableRecord] = {}
        self.building: set[str] = set()
        self.servers: dict[str, ServerRecord] = {}
        self.handles: dict[str, Any] = {}
        self.idle: list[str] = []
        self.losses = Losses()
        self.pool_lock = threading.Lock()  # one refill of the idle pool at a time
        self.started = threading.Event()
        self.start_error: BaseException | None = None
        self.restore_report: dict[str, Any] = {"restored": [], "skipped": [], "seconds": 0.0}
        self._starting = False

    # -- starting ---------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """Open the data directory and restore its tables (the first caller does it; later
        ones wait for it). The restore report: tables restored, damaged ones skipped."""
        with self.lock:
            first, self._starting = not self._starting, True
        if first:
            try:
                self._start()
            except BaseException as error:  # noqa: BLE001 - every front hears why
                self.start_error = error
            finally:
                self.started.set()
        self.started.wait()
        if self.start_error is not None:
            raise self.start_error
        return self.restore_report

    def _start(self) -> None:
        started = time.perf_counter()
        self.store.open()  # the lock; leftovers of interrupted snapshots removed
        if not self._adopt():  # a restarted catalog takes over the servers that live on
            self._restore()
        self.restore_report["seconds"] = time.perf_counter() - started
        threading.Thread(target=self._fill_pool, daemon=True).start()
        if self.settings.snapshot_interval_seconds > 0:
            threading.Thread(target=self._periodic, daemon=True).start()

    def _adopt(self) -> bool:
        names = [actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
                 if actor["namespace"] == self.namespace
                 and actor["name"].startswith(SERVER_PREFIX)]
        for name in names:
            with contextlib.suppress(Exception):
                handle = ray.get_actor(name, namespace=self.namespace)
                report = cast("dict[str, Any]", ray.get(handle.report.remote(), timeout=30))
                self._adopt_one(name, handle, report)
        return bool(names)

    def _adopt_one(self, name: str, handle: Any, report: dict[str, Any]) -> None:
        held = report["held"]
        record = ServerRecord(report["url"], report["incarnation"])
        self.handles[name], self.servers[name] = handle, record
        if held is None:
            self.idle.append(name)
            return
        spec, place = TableSpec(**held["spec"]), held["place"]
        table = self.tables.get(spec.name)
        if table is None:
            table = self.tables[spec.name] = TableRecord(
                spec, place["shards"], place["generation"], [""] * place["shards"])
        table.servers[place["shard"]] = name
        record.table, record.shard = spec.name, place["shard"]

    def _restore(self) -> None:
        tables_dir = self.store.tables_dir
        for table_dir in sorted(p for p in tables_dir.iterdir() if p.is_dir()):
            try:
                snapshot = committed_snapshot(table_dir)
                if snapshot is None:
                    continue
                spec, recorded = spec_of(snapshot)
                if spec.name != table_dir.name:
                    raise SnapshotDamaged(str(snapshot), f"is of table {spec.name!r}, not "
                                          f"{table_dir.name!r}")
                shards = self.settings.restore_shards or recorded or self.settings.shards
                self._place(spec, shards, str(snapshot))
            except SnapshotDamaged as error:
                if not self.settings.skip_damaged_snapshots:
                    raise
                self.restore_report["skipped"].append(
                    [error.detail, str(self.store._set_aside(table_dir))])
                continue
            self.restore_report["restored"].append(spec.name)

    # -- tables -------------------------------------------------------------------------------
    def create_table(self, spec: dict[str, Any], shards: int) -> dict[str, Any]:
        """A new table over `shards` servers (its rows drawn by each, in parallel)."""
        table_spec = TableSpec(**spec)
        check_table_name(table_spec.name)
        with self.lock:
            if table_spec.name in self.tables or table_spec.name in self.building:
                raise TableExists(table_spec.name)
            if len(self.tables) + len(self.building) >= self.settings.max_tables:
                raise BudgetExceeded(f"table {table_spec.name!r} refused: the service already "
                                     f"holds max_tables={self.settings.max_tables}")
            self.building.add(table_spec.name)
        try:
            self._place(table_spec, shards, None)
        finally:
            with self.lock:
                self.building.discard(table_spec.name)
        return self.describe(table_spec.name)

    def _place(self, spec: TableSpec, shards: int, snapshot: str | None) -> None:
        """Assign `shards` servers to the table (fresh rows, or from `snapshot`)."""
        names = self._take(shards)
        table = TableRecord(spec, shards, uuid.uuid4().hex[:16], names)
        with self.lock:
            for shard, name in enumerate(names):
                self.servers[name].table, self.servers[name].shard = spec.name, shard
            assignments = [self._assignment(table, shard, False, snapshot)
                           for shard in range(shards)]
        try:
            result([self.handles[name].host.remote(assignment)
                    for name, assignment in zip(names, assignments, strict=True)])
        except BaseException:
            self._release(names)
            raise
        with self.lock:
            self.tables[spec.name] = table
        if snapshot is not None and not is_sharded(Path(snapshot)):
            table.committed = None  # a single-process snapshot: the next one writes shards

    def delete_table(self, name: str) -> None:
        """The table and its snapshot, or neither (service.core.snapshot_store's delete)."""
        self.store.delete_table(_Tables(self), name)

    def _forget(self, name: str) -> None:
        with self.lock:
            table = self.tables.pop(name, None)
        if table is None:
            raise TableNotFound(name)
        self._release(table.servers)

    def describe(self, name: str) -> dict[str, Any]:
        """A table's map: its spec, shards, generation and each shard server's address."""
        with self.lock:
            table = self.tables.get(name)
            if table is None:
                raise TableNotFound(name)
            return {"spec": asdict(table.spec), "shards": table.shards,
                    "generation": table.generation, "version": f"{table.generation}."
                    f"{table.version}", "urls": self._urls(table),
                    "servers": list(table.servers)}

    def names(self) -> list[str]:
        with self.lock:
            return sorted(self.tables)

    def server(self, name: str) -> Any:
        return self.handles[name]

    def losses_by_table(self) -> dict[str, dict[str, int]]:
        with self.lock:
            return {"restarts": dict(self.losses.restarts), "steps": dict(self.losses.steps)}

    # -- snapshots ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Every table that changed since its last snapshot: each shard's rows streamed, then
        all shards' instants taken between two steps, then committed as one snapshot."""
        with self.run_lock:
            started = time.perf_counter()
            written, unchanged = [], []
            for name in self.names():
                with self.lock:
                    table = self.tables.get(name)
                if table is None:
                    continue
                done = self._snapshot_table(table)
                if done is None:
                    unchanged.append(name)
                else:
                    written.append(done)
            return {"tables": written, "unchanged": unchanged,
                    "bytes": sum(table["bytes"] for table in written),
                    "seconds": time.perf_counter() - started}

    def _snapshot_table(self, table: TableRecord) -> dict[str, Any] | None:
        handles = [self.handles[name] for name in table.servers]
        return write_table_snapshot(self.store, table, handles,
                                    lambda: self.tables.get(table.spec.name) is table)

    def _periodic(self) -> None:
        while True:
            time.sleep(self.settings.snapshot_interval_seconds)
            try:
                report = self.snapshot()
                if report["tables"]:
                    log.info("periodic snapshot: %d table(s), %d bytes", len(report["tables"]),
                             report["bytes"])
            except EmbeddingServiceError as error:
                log.error("periodic snapshot failed: %s", error.detail)
            except Exception:  # noqa: BLE001 - the next period tries again
                log.exception("periodic snapshot failed")

    def close(self) -> None:
        """Let go of the data directory (a front that owns the instance, stopping)."""
        self.store.close()


class _Tables:
    """The registry interface SnapshotStore.delete_table asks: get and delete by name."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def get(self, name: str) -> TableRecord:
        with self.catalog.lock:
            table = self.catalog.tables.get(name)
        if table is None:
            raise TableNotFound(name)
        return table

    def delete(self, name: str) -> None:
        self.catalog._forget(name)
