"""A shard server: the Ray actor holding one shard of one table, serving it over its own HTTP.

The catalog (service.cluster.catalog) starts shard servers (`ShardServer`, named, restarted by
Ray when their process dies: max_restarts), keeps a few idle ones ready so that creating a
table takes no process start, and assigns each one a shard (`host`). A server:

- runs the shard's HTTP (service.cluster.worker_app) in a thread of its own with its own event
  loop (uvloop), on a free port of its node; Ray method calls (snapshots, labels, weights,
  stats) arrive on Ray's threads and reach the shard under its locks;
- on shard 0 also runs the table's leader (service.cluster.leader) in that event loop;
- after a restart (Ray runs __init__ again) asks the catalog what it held and restores it from
  the table's last committed snapshot, then takes the table's step from the leader (or, being
  the leader, settles its peers: Leader.recover). Requests that arrive meanwhile get 503 with
  Retry-After. What was lost (the steps since that snapshot, the pushes it held) is reported
  to the catalog, which counts it in /metrics.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, cast

import numpy as np
import ray
import uvicorn

from service.api.allocator import tune_malloc
from service.api.server import build_config
from service.api.settings import Settings
from service.cluster.dynamic_shard import shard_class
from service.cluster.journal import Journal
from service.cluster.leader import Leader
from service.cluster.peers import Peers, Unreachable
from service.cluster.placement import Place, TableSpec
from service.cluster.shard import ShardTable
from service.cluster.worker_app import Hosted, worker_app
from service.core import kernels
from service.core.budget import MemoryBudget
from service.core.sharded_snapshots import read_shard
from service.core.warm_up import warm_up

log = logging.getLogger("service.cluster")


class HttpThread:
    """The service's own server (service.api.server's uvicorn configuration and connection
    protocol) serving `app` on a free port of 0.0.0.0, in a thread with its own event loop."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen(2048)
        self.port = int(self.sock.getsockname()[1])
        config = build_config(app, settings, "0.0.0.0", self.port)
        config.lifespan = "off"  # the shard is made by the actor, not by an app lifespan
        config.log_level = "warning"
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="shard-http", daemon=True)
        self.thread.start()
        while not self.server.started and self.thread.is_alive():
            time.sleep(0.005)

    def _run(self) -> None:
        import uvloop

        self.loop = uvloop.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve(sockets=[self.sock]))

    def run(self, coroutine: Any, timeout: float = 600.0) -> Any:
        """Run a coroutine on the server's event loop (the leader's) and wait for it."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


class ShardServer:
    """Decorated with ray.remote by the catalog (service.cluster.catalog_servers.server_actor)."""

    def __init__(self, name: str, catalog: str, namespace: str, settings: dict[str, Any]) -> None:
        self.name = name
        self.settings = Settings(**settings)
        kernels.use(self.settings.kernels)
        warm_up()
        tune_malloc(self.settings.malloc_mmap_threshold_bytes)  # as the service's own process
        self.incarnation = uuid.uuid4().hex[:12]
        self.hosted = Hosted()
        self.budget = MemoryBudget(self.settings.memory_budget_bytes, self._used)
        self.http = HttpThread(worker_app(self.hosted, self.settings), self.settings)
        host = (self.settings.cluster_advertise_host
                or ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]  # ray's
        self.url = f"http://{host}:{self.http.port}"
        self.catalog = ray.get_actor(catalog, namespace=namespace)
        self.peers: Peers | None = None
        assignment = cast("dict[str, Any] | None", ray.get(
            self.catalog.server_started.remote(name, self.url, self.incarnation)))
        if assignment is not None:  # a restart: what this server held comes back
            held = self.host(assignment, restart=True)
            self.catalog.server_restored.remote(name, held["lost"])

    def _used(self) -> int:
        shard = self.hosted.shard
        return 0 if shard is None else shard.nbytes

    def ready(self) -> str:
        return self.url

    # -- holding a shard ------------------------------------------------------------------------
    def host(self, assignment: dict[str, Any], restart: bool = False) -> dict[str, Any]:
        """Become shard `place` of table `spec`: its initial rows, or its rows of the
        snapshot `snapshot` (a path in the data directory), then serve it."""
        spec = TableSpec(**assignment["spec"])
        place = Place(**assignment["place"])
        hosted = self.hosted
        hosted.ready = False
        hosted.generation, hosted.shard_number = place.generation, place.shard
        journal = Journal(self.settings.idempotency_max_keys,
                          self.settings.idempotency_ttl_seconds,
                          self.settings.idempotency_max_bytes)
        snapshot = assignment.get("snapshot")
        lost: dict[str, int] = {}
        if snapshot:
            part = read_shard(Path(snapshot), place.shard, place.shards, self.budget)
            shard = shard_class(spec).of_part(spec, place, part, journal)
        else:
            shard = shard_class(spec).fresh(spec, place, journal, self.budget)
        hosted.shard = shard
        self.peers = Peers(spec.name, place.generation,
                           self.settings.token.get_secret_value() if self.settings.token
                           else None, list(assignment["urls"]), self._addresses(spec.name))
        hosted.leader = Leader(shard, self.peers) if place.shard == 0 else None
        if restart:
            lost = self._catch_up(shard)
        hosted.ready = True
        return {"url": self.url, "incarnation": self.incarnation, "lost": lost,
                **shard.stats()}

    def _catch_up(self, shard: ShardTable) -> dict[str, int]:
        """After a restart: the table's step (from the leader, or settled by it). Returns
        what was lost: the steps between the snapshot's and the table's, and the pushes
        this shard held pending at its snapshot... counted by the catalog."""
        restored_step = shard.step
        leader = self.hosted.leader
        step = restored_step
        if leader is not None:
            step = self.http.run(leader.recover())
        else:
            assert self.peers is not None
            for _ in range(50):
                try:
                    status = self.http.run(self.peers.call(0, "status", fields={}))
                    step = int(status["step"])
                    break
                except Unreachable:
                    time.sleep(0.2)
            shard.commit("", step)
        return {"restored_step": restored_step, "step": step}

    def _addresses(self, table: str) -> Any:
        catalog = self.catalog

        async def addresses() -> list[str | None]:
            described = await catalog.describe.remote(table)
            return list(described["urls"])

        return addresses

    def set_urls(self, urls: list[str | None]) -> None:
        """A peer restarted or moved: its new address."""
        if self.peers is not None:
            self.peers.urls = list(urls)

    def release(self) -> None:
        """The table was deleted: serve nothing (the server goes back to the idle pool)."""
        hosted = self.hosted
        hosted.ready = False
        hosted.shard, hosted.leader, hosted.generation, hosted.shard_number = None, None, "", -1
        self.peers = None

    def report(self) -> dict[str, Any]:
        """What the server is and holds (a catalog that restarted rebuilds itself from it)."""
        shard = self.hosted.shard
        held = None
        if shard is not None:
            held = {"spec": shard.spec.__dict__, "place": shard.place.__dict__}
        return {"name": self.name, "url": self.url, "incarnation": self.incarnation,
                "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "held": held}

    # -- what the fronts ask ----------------------------------------------------------------
    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, int]:
        """W[ids] of this shard's ids by a Ray actor call: the data path the fronts do not
        take (a call costs several HTTP round trips here: docs/cluster.md), kept for code that
        runs on Ray itself and for bench/cluster_paths.py, which measures it."""
        return self._shard().lookup(np.asarray(ids))

    def stats(self) -> dict[str, Any]:
        shard = self.hosted.shard
        counts = self.hosted.counts
        found = shard.stats() if shard is not None else {}
        return {**found, "url": self.url, "looked_up": counts.looked_up,
                "pushed": counts.pushed, "updated": counts.updated}

    def labels(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        """A call on the table's labels (shard 0 keeps them, keyed by table id)."""
        shard = self._shard()
        store = shard.table.labels
        if operation == "set":
            ids, labels, merge = args
            store.set(np.asarray(ids, dtype=np.int64), labels, merge=merge,
                      check_ids=shard.check_ids)
            return len(store)
        if operation == "items":
            found_ids, found = store.items()
            return found_ids.tolist(), found
        if operation == "labels_of":
            return store.labels_of(np.asarray(args[0], dtype=np.int64))
        if operation == "ids_of":
            return store.ids_of(args[0], args[1]).tolist()
        if operation == "count":
            return len(store), store.nbytes
        raise ValueError(f"no labels operation {operation!r}")

    def export_rows(self) -> tuple[np.ndarray, np.ndarray, int]:
        """A dynamic table's shard: its keys (ascending), their rows and the step."""
        return self._shard().table.export_rows()  # type: ignore[attr-defined, no-any-return]

    def stage_weights(self, token: str, ids: np.ndarray, rows: np.ndarray) -> None:
        self._shard().stage_weights(token, ids, rows)

    def replace_weights(self, token: str) -> int:
        """On shard 0: every shard's staged rows become its weights, between two steps."""
        leader = self.hosted.leader
        assert leader is not None, "replace_weights goes to shard 0"
        return int(self.http.run(leader.replace_weights(token)))

    # -- snapshots --------------------------------------------------------------------------
    def snapshot_begin(self, directory: str) -> int:
        """Stream this shard's rows into `directory`; its change count (unchanged tables are
        not written again)."""
        shard = self._shard()
        shard.snapshot_begin(Path(directory))
        return int(shard.table.changes)

    def snapshot_capture(self) -> int:
        """On shard 0: every shard's instant, between two steps; the step they hold."""
        leader = self.hosted.leader
        assert leader is not None, "capture goes to shard 0"
        return int(self.http.run(leader.capture()))

    def snapshot_complete(self) -> dict[str, Any]:
        written = self._shard().snapshot_complete()
        return {"step": written.step, "bytes": written.bytes, "changes": written.changes}

    def snapshot_cancel(self) -> None:
        shard = self.hosted.shard
        if shard is not None:
            shard.snapshot_cancel()

    def changes(self) -> int:
        shard = self.hosted.shard
        return -1 if shard is None else int(shard.table.changes)

    def _shard(self) -> ShardTable:
        shard = self.hosted.shard
        if shard is None:
            raise RuntimeError(f"shard server {self.name} holds no shard")
        return shard
