"""The tables' life across restarts: restore on start, periodic snapshots, snapshot on stop.

`durable_tables(app)` wraps the app's lifespan. File I/O runs in worker threads, so the event
loop keeps serving requests while a snapshot is written. A start refused on purpose (the data
directory unusable or held by another process, a damaged snapshot, restored tables over the
memory budget) is one log line saying why; `QuietStartupRefusal` keeps the server from adding
the traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.errors import BudgetExceeded, EmbeddingServiceError, SnapshotDamaged, StorageError
from service.core.snapshot_store import SnapshotReport, SnapshotStore

log = logging.getLogger("service.snapshots")


def _timed(app: FastAPI, operation: str) -> contextlib.AbstractContextManager[None]:
    """The metrics helper's snapshot timer (embed_snapshot_duration_seconds), if the app has one."""
    metrics = getattr(app.state, "metrics", None)
    return metrics.time_snapshot(operation) if metrics is not None else contextlib.nullcontext()


async def take_snapshot(app: FastAPI, reason: str) -> SnapshotReport:
    """Write every table that changed since its last snapshot; StorageError if the disk refuses."""
    store: SnapshotStore = app.state.snapshots
    with _timed(app, "save"):
        report = await anyio.to_thread.run_sync(store.snapshot, app.state.registry)
    if report.written:
        log.info(
            "snapshot (%s): %d table(s) written to %s, %d bytes in %.2f s, %d unchanged",
            reason, len(report.written), store.data_dir, report.bytes, report.seconds,
            len(report.unchanged),
        )
    return report


async def restore(app: FastAPI) -> None:
    """Open the data directory and load every table in it; refuse to start on a damaged one
    unless skip_damaged_snapshots is set."""
    store: SnapshotStore = app.state.snapshots
    settings = app.state.settings
    try:
        removed = await anyio.to_thread.run_sync(store.open)
        for path in removed:
            log.info("removed %s: left over from an interrupted snapshot or deletion", path)
        with _timed(app, "restore"):
            report = await anyio.to_thread.run_sync(
                lambda: store.restore_into(
                    app.state.registry, skip_damaged=settings.skip_damaged_snapshots
                )
            )
    except EmbeddingServiceError as error:
        log.error("refusing to start: %s", refusal(error, settings.memory_budget_bytes))
        raise
    for reason, moved_to in report.skipped:
        log.warning("skipped a damaged table (skip_damaged_snapshots): %s; moved to %s",
                    reason, moved_to)
    if report.restored:
        log.info("restored %d table(s) from %s in %.2f s: %s", len(report.restored),
                 store.data_dir, report.seconds, ", ".join(report.restored))


def refusal(error: EmbeddingServiceError, budget: int) -> str:
    """Why the service does not start, and what to do about it."""
    if isinstance(error, SnapshotDamaged):
        return (f"{error.detail}. Repair or remove it, or set EMBED_SKIP_DAMAGED_SNAPSHOTS=true "
                "to start without that table")
    if isinstance(error, BudgetExceeded):
        return (f"restoring {error.detail}; raise EMBED_MEMORY_BUDGET_BYTES (now {budget}) or "
                "EMBED_MAX_TABLES")
    return error.detail


class QuietStartupRefusal:
    """ASGI middleware for the lifespan only: when the start is refused on purpose (an
    EmbeddingServiceError, already logged as one line by `restore`), the server is told the
    start failed without the traceback Starlette attaches, so it is not printed under the line.
    Any other error keeps its traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        failed: list[Message] = []

        async def holding_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                failed.append(message)  # sent below, once the exception tells why
            else:
                await send(message)

        try:
            await self.app(scope, receive, holding_send)
        except EmbeddingServiceError:
            if failed:
                await send({"type": "lifespan.startup.failed", "message": ""})
            raise
        except BaseException:
            for message in failed:
                await send(message)
            raise
        for message in failed:
            await send(message)


async def _every(app: FastAPI, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await take_snapshot(app, "periodic")
        except StorageError as error:
            log.error("periodic snapshot failed: %s", error.detail)


@contextlib.asynccontextmanager
async def durable_tables(app: FastAPI) -> AsyncIterator[None]:
    """Restore before serving; snapshot periodically and on graceful shutdown; then let go of
    the data directory."""
    settings = app.state.settings
    try:
        await restore(app)
    except BaseException:
        app.state.snapshots.close()
        raise
    periodic = None
    store = app.state.snapshots
    # in cluster mode the catalog snapshots periodically itself, and only a front that owns
    # the Ray instance takes the shutdown snapshot (service.cluster.front)
    if settings.snapshot_interval_seconds > 0 and getattr(store, "periodic_in_process", True):
        periodic = asyncio.create_task(_every(app, settings.snapshot_interval_seconds))
    try:
        yield
    finally:
        try:
            if periodic is not None:
                periodic.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await periodic  # a snapshot in its thread finishes first
            if settings.snapshot_on_shutdown and getattr(store, "owns_tables", True):
                try:
                    await take_snapshot(app, "shutdown")
                except StorageError as error:
                    log.error("snapshot on shutdown failed, changes since the last snapshot "
                              "are lost: %s", error.detail)
        finally:
            app.state.snapshots.close()
