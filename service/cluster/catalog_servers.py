"""The catalog's shard servers (service.cluster.catalog): starting them (spread over the
nodes), the pool of idle ones a create takes from (so a create starts no process), assigning
and releasing them, and what a server that Ray restarted is told and what it lost.

CatalogServers is a part of the Catalog actor: it keeps the catalog's servers, handles and
idle pool, under the catalog's lock.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from dataclasses import asdict
from typing import Any

import ray

from service.api.settings import Settings
from service.cluster.catalog_records import Losses, ServerRecord, TableRecord
from service.cluster.runtime import CATALOG, SERVER_PREFIX, result
from service.core.snapshot_store import SnapshotStore, committed_snapshot

log = logging.getLogger("service.cluster")


def server_actor() -> Any:
    from service.cluster.worker import ShardServer

    return ray.remote(ShardServer)


class CatalogServers:
    """The catalog's shard servers (see the module docstring)."""

    settings: Settings
    payload: dict[str, Any]  # the settings, as each server is started with them
    namespace: str
    store: SnapshotStore
    lock: threading.RLock  # tables, servers, idle
    pool_lock: threading.Lock  # one refill of the idle pool at a time
    tables: dict[str, TableRecord]
    servers: dict[str, ServerRecord]
    handles: dict[str, Any]
    idle: list[str]
    losses: Losses

    def _new_servers(self, count: int) -> list[str]:
        """Start `count` shard servers (spread over the nodes) and wait until they serve."""
        names = [f"{SERVER_PREFIX}{uuid.uuid4().hex[:12]}" for _ in range(count)]
        handles = [server_actor().options(
            name=name, namespace=self.namespace, lifetime="detached", max_restarts=-1,
            max_concurrency=16, num_cpus=0, scheduling_strategy="SPREAD",
            resources=dict(self.settings.ray_shard_resources) or None,
        ).remote(name, CATALOG, self.namespace, self.payload) for name in names]
        urls = result([handle.ready.remote() for handle in handles])
        with self.lock:
            for name, handle, url in zip(names, handles, urls, strict=True):
                self.handles[name] = handle
                self.servers[name].url = url
        return names

    def _fill_pool(self) -> None:
        """Keep EMBED_SHARDS idle servers ready (one refill at a time)."""
        if not self.pool_lock.acquire(blocking=False):
            return
        try:
            missing = self.settings.shards - len(self.idle)
            if missing > 0:
                names = self._new_servers(missing)
                with self.lock:
                    self.idle.extend(names)
        except Exception:  # noqa: BLE001 - a create starts what it needs itself
            log.exception("could not start idle shard servers")
        finally:
            self.pool_lock.release()

    def _take(self, count: int) -> list[str]:
        with self.lock:
            taken, self.idle = self.idle[:count], self.idle[count:]
        if len(taken) < count:
            taken += self._new_servers(count - len(taken))
        threading.Thread(target=self._fill_pool, daemon=True).start()
        return taken

    def server_started(self, name: str, url: str, incarnation: str) -> dict[str, Any] | None:
        """A shard server (re)started: its address, and what it held if it restarted."""
        with self.lock:
            record = self.servers.get(name)
            if record is None:
                self.servers[name] = ServerRecord(url, incarnation)
                return None
            record.url, record.incarnation = url, incarnation
            if record.table is None or record.table not in self.tables:
                return None
            table = self.tables[record.table]
            table.version += 1
            self.losses.restarts[table.spec.name] = self.losses.restarts.get(
                table.spec.name, 0) + 1
            return self._assignment(table, record.shard, restore=True)

    def server_restored(self, name: str, lost: dict[str, int]) -> None:
        """A restarted server serves again: count what it lost, tell its peers where it is."""
        with self.lock:
            record = self.servers[name]
            table = self.tables.get(record.table or "")
            if table is None:
                return
            lost_steps = max(0, lost.get("step", 0) - lost.get("restored_step", 0))
            self.losses.steps[table.spec.name] = self.losses.steps.get(
                table.spec.name, 0) + lost_steps
            table.version += 1
            urls = self._urls(table)
            peers = [self.handles[server] for server in table.servers if server != name]
        for handle in peers:
            handle.set_urls.remote(urls)

    def _urls(self, table: TableRecord) -> list[str | None]:
        return [self.servers[name].url if name in self.servers else None
                for name in table.servers]

    def _assignment(self, table: TableRecord, shard: int, restore: bool,
                    snapshot: str | None = None) -> dict[str, Any]:
        if restore:
            found = committed_snapshot(self.store.tables_dir / table.spec.name)
            snapshot = str(found) if found is not None else None
        return {"spec": asdict(table.spec),
                "place": {"shard": shard, "shards": table.shards,
                          "generation": table.generation},
                "urls": self._urls(table), "snapshot": snapshot}

    def _release(self, names: list[str]) -> None:
        """Servers back to the idle pool (beyond its size, stopped)."""
        for name in names:
            handle = self.handles[name]
            with self.lock:
                self.servers[name].table, self.servers[name].shard = None, -1
                keep = len(self.idle) < self.settings.shards
            if keep:
                with contextlib.suppress(Exception):
                    ray.get(handle.release.remote(), timeout=60)
                    with self.lock:
                        self.idle.append(name)
                    continue
            with contextlib.suppress(Exception):
                ray.kill(handle, no_restart=True)
            with self.lock:
                self.servers.pop(name, None)
                self.handles.pop(name, None)
