"""A front in cluster mode: the registry and durability interfaces of the API, on the cluster.

`cluster_tables(settings)` is what create_app asks for when EMBED_CLUSTER=ray: in place of the
in-process TableRegistry and SnapshotStore,

- ClusterRegistry: tables by name (service.cluster.table.ClusterTable), each described once by
  the catalog and cached; creation through the catalog, checked first with the core's rules;
- ClusterDurability: joins Ray when the app starts (open), waits for the catalog's restore of
  the data directory (restore_into), snapshots through the catalog, deletes through it, and
  lets go of Ray when the app stops. Periodic snapshots are the catalog's own; the shutdown
  snapshot is taken only by a front that owns its Ray instance (one that joined a cluster
  leaves the tables serving);
- ShardMapHeader, middleware: the request's Idempotency-Key for the table's parts, and
  X-Shard-Map on replies about a sharded table (the SDK's cue to route by key);
- a Prometheus collector of what shard restarts lost.

Ray is imported only here and below (service.cluster), and only when this is called.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.settings import Settings
from service.client._transport import PooledHTTPTransport
from service.client._wire import AnyResponse, Call, RequestFactory
from service.cluster.runtime import Connection, connect, result
from service.cluster.table import ClusterTable, request_key
from service.core.budget import MemoryBudget
from service.core.dynamic.spec import check_spec
from service.core.errors import TableNotFound
from service.core.initializers import InitSpec
from service.core.registry import MemoryHolder, check_table_name, check_table_settings
from service.core.snapshot_store import RestoreReport, SnapshotReport
from service.core.snapshots import WrittenTable


class ClusterRegistry:
    """The registry interface (service.core.registry.TableRegistry's) over the catalog."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.memory_budget_bytes = settings.memory_budget_bytes
        self.max_tables = settings.max_tables
        self.connection: Connection | None = None
        self._tables: dict[str, ClusterTable] = {}
        self._lock = threading.Lock()
        self._holders: list[MemoryHolder] = []
        self.budget = MemoryBudget(settings.memory_budget_bytes, lambda: self.memory_used_bytes)
        self.transport = PooledHTTPTransport(max_idle=64)
        token = settings.token.get_secret_value() if settings.token else None
        self._token = token
        self._factories: dict[str, RequestFactory] = {}
        self.timeouts = {"connect": 2.0, "read": 120.0, "write": 120.0, "pool": 120.0}

    @property
    def catalog(self) -> Any:
        if self.connection is None:
            raise RuntimeError("not connected to Ray yet (the app's lifespan opens it)")
        return self.connection.catalog

    # -- the registry interface -----------------------------------------------------------------
    def get(self, name: str) -> ClusterTable:
        table = self._tables.get(name)
        if table is None:
            described = result(self.catalog.describe.remote(name), timeout=60)
            with self._lock:
                table = self._tables.get(name)
                if table is None or table.generation != described["generation"]:
                    table = self._tables[name] = ClusterTable(self, described)
        return table

    def refresh(self, table: ClusterTable) -> None:
        """The table's map again from the catalog (a shard moved or restarted)."""
        try:
            described = result(self.catalog.describe.remote(table.name), timeout=60)
        except TableNotFound:
            self.forget(table.name)
            raise
        if described["generation"] != table.generation:
            self.forget(table.name)
            raise TableNotFound(table.name)
        table.refresh(described)

    def forget(self, name: str) -> None:
        with self._lock:
            self._tables.pop(name, None)

    def __iter__(self) -> Iterator[ClusterTable]:
        found: list[ClusterTable] = []
        if self.connection is None:  # before the app's start (a metrics collector's probe)
            return iter(found)
        for name in result(self.catalog.names.remote(), timeout=60):
            try:
                found.append(self.get(name))
            except TableNotFound:
                continue
        return iter(found)

    def __len__(self) -> int:
        if self.connection is None:
            return 0
        return len(result(self.catalog.names.remote(), timeout=60))

    @property
    def nbytes(self) -> int:
        return sum(table.nbytes for table in self)

    @property
    def memory_used_bytes(self) -> int:
        """What this front holds against its budget (the tables are the shard servers')."""
        return sum(holder.nbytes for holder in list(self._holders))

    def add_memory_holder(self, holder: MemoryHolder) -> None:
        self._holders.append(holder)

    def create(self, name: str, num_embeddings: int | None, embedding_dim: int, *,
               dtype: str = "float32", init: InitSpec | None = None, seed: int | None = None,
               optimizer: dict[str, Any] | None = None, max_staleness: int | None = None,
               dynamic: dict[str, Any] | None = None,
               shards: int | None = None) -> ClusterTable:
        """A new table over `shards` shard servers (EMBED_SHARDS by default), checked as the
        single-process registry checks one before anything is made."""
        check_table_name(name)
        rule = check_table_settings(num_embeddings, embedding_dim, dtype, init, optimizer,
                                    max_staleness, dynamic)
        init = init or InitSpec()
        settings = None if dynamic is None else check_spec(dynamic).as_dict()
        if settings is not None and seed is None:  # one seed for every shard's initial rows
            seed = secrets.randbits(63)
        count = shards or self.settings.shards
        spec = {"name": name, "num_embeddings": num_embeddings, "embedding_dim": embedding_dim,
                "dtype": dtype, "init": init.as_dict(), "seed": seed, "optimizer": rule.config(),
                "max_staleness": max_staleness, "dynamic": settings}
        described = result(self.catalog.create_table.remote(spec, count), timeout=600)
        with self._lock:
            table = self._tables[name] = ClusterTable(self, described)
        return table

    def shard_map(self, name: str) -> dict[str, Any]:
        return self.get(name).map_json()

    # -- sending -------------------------------------------------------------------------------
    def server(self, name: str) -> Any:
        import ray

        return ray.get_actor(name, namespace=self.settings.ray_namespace)

    def send_all(self, calls: list[tuple[str, Call[Any]]]) -> list[AnyResponse | Exception]:
        prepared = [self._factory(url).prepare(call) for url, call in calls]
        return self.transport.send_all(prepared, self.timeouts)

    def _factory(self, url: str) -> RequestFactory:
        factory = self._factories.get(url)
        if factory is None:
            factory = self._factories[url] = RequestFactory(url, self._token, 2.0, 120.0)
        return factory

    # -- what create_app adds in cluster mode ----------------------------------------------------
    def middleware(self) -> list[tuple[type, dict[str, Any]]]:
        return [(ShardMapHeader, {"registry": self})]

    def collector(self) -> Any:
        return LossCollector(self)


class LossCollector:
    """What shard restarts lost, by table: restarts, and steps whose updates of a restarted
    shard's rows are gone (the pushes it held since its last snapshot went with it)."""

    def __init__(self, registry: ClusterRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Any]:
        restarts = CounterMetricFamily(
            "embed_cluster_shard_restarts", "Shard servers restarted (restored from the "
            "table's last snapshot), by table.", labels=["table"])
        steps = CounterMetricFamily(
            "embed_cluster_lost_steps", "Steps whose updates of a restarted shard's rows were "
            "lost (taken after its snapshot, before it died), by table.", labels=["table"])
        if self.registry.connection is not None:
            losses = result(self.registry.catalog.losses_by_table.remote(), timeout=30)
            for name, count in losses["restarts"].items():
                restarts.add_metric([name], count)
            for name, count in losses["steps"].items():
                steps.add_metric([name], count)
        yield from (restarts, steps)


class ClusterDurability:
    """The durability interface (service.core.snapshot_store.SnapshotStore's) over the catalog."""

    periodic_in_process = False  # the catalog snapshots periodically, whatever the fronts do

    def __init__(self, registry: ClusterRegistry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings
        self.data_dir = settings.data_dir

    @property
    def owns_tables(self) -> bool:
        """Whether the tables stop with this front (it started the Ray instance)."""
        connection = self.registry.connection
        return connection is not None and connection.owner

    def open(self) -> list[Path]:
        self.registry.connection = connect(self.settings)
        return []

    def restore_into(self, registry: Any, *, skip_damaged: bool = False) -> RestoreReport:
        report = result(self.registry.catalog.start.remote(), timeout=3600)
        return RestoreReport(list(report["restored"]),
                             [(why, Path(where)) for why, where in report["skipped"]],
                             float(report["seconds"]))

    def snapshot(self, registry: Any) -> SnapshotReport:
        report = result(self.registry.catalog.snapshot.remote(), timeout=3600)
        written = [WrittenTable(table["name"], table["step"], 0, table["bytes"],
                                table["seconds"]) for table in report["tables"]]
        return SnapshotReport(written, list(report["unchanged"]), float(report["seconds"]))

    def delete_table(self, registry: Any, name: str) -> None:
        result(self.registry.catalog.delete_table.remote(name), timeout=600)
        self.registry.forget(name)

    def close(self) -> None:
        connection = self.registry.connection
        if connection is None:
            return
        if connection.owner:
            with contextlib.suppress(Exception):  # Ray is being stopped anyway
                result(connection.catalog.close.remote(), timeout=60)
        connection.close()
        self.registry.connection = None


TABLE_PATH = b"/v1/tables/"
MAPPED = (b"/lookup", b"/gradients", b"/apply")


class ShardMapHeader:
    """Middleware of a cluster-mode front: the request's Idempotency-Key to the table's parts
    (request_key), and on replies about a sharded table's lookups, pushes and applies
    `X-Shard-Map: <version>`, the SDK's cue to fetch the map and route by key."""

    def __init__(self, app: ASGIApp, registry: ClusterRegistry) -> None:
        self.app = app
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"].encode()
        name = None
        if path.startswith(TABLE_PATH) and path.endswith(MAPPED):
            name = path[len(TABLE_PATH):].rsplit(b"/", 1)[0].decode()
        key = next((value.decode("latin-1") for header, value in scope["headers"]
                    if header == b"idempotency-key"), None)
        token = request_key.set(key)
        try:
            if name is None:
                await self.app(scope, receive, send)
                return
            tables = self.registry._tables

            async def marking_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    table = tables.get(name)
                    if table is not None:
                        message["headers"] = [*message.get("headers", []),
                                              (b"x-shard-map", table.version.encode())]
                await send(message)

            await self.app(scope, receive, marking_send)
        finally:
            request_key.reset(token)


def cluster_tables(settings: Settings) -> tuple[ClusterRegistry, ClusterDurability]:
    registry = ClusterRegistry(settings)
    return registry, ClusterDurability(registry, settings)
