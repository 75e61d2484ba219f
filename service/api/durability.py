"""The tables' life across restarts: restore on start, periodic snapshots, snapshot on stop.

`durable_tables(app)` wraps the app's lifespan. File I/O runs in worker threads, so the event
loop keeps serving requests while a snapshot is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio
from fastapi import FastAPI

from service.core.errors import SnapshotDamaged, StorageError
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
    removed = await anyio.to_thread.run_sync(store.open)
    for path in removed:
        log.info("removed %s: left over from an interrupted snapshot or deletion", path)
    try:
        with _timed(app, "restore"):
            report = await anyio.to_thread.run_sync(
                lambda: store.restore_into(
                    app.state.registry, skip_damaged=settings.skip_damaged_snapshots
                )
            )
    except SnapshotDamaged as error:
        log.error(
            "refusing to start: %s. Repair or remove it, or set EMBED_SKIP_DAMAGED_SNAPSHOTS=true "
            "to start without that table", error.detail,
        )
        raise
    for reason, moved_to in report.skipped:
        log.warning("skipped a damaged table (skip_damaged_snapshots): %s; moved to %s",
                    reason, moved_to)
    if report.restored:
        log.info("restored %d table(s) from %s in %.2f s: %s", len(report.restored),
                 store.data_dir, report.seconds, ", ".join(report.restored))


async def _every(app: FastAPI, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await take_snapshot(app, "periodic")
        except StorageError as error:
            log.error("periodic snapshot failed: %s", error.detail)


@contextlib.asynccontextmanager
async def durable_tables(app: FastAPI) -> AsyncIterator[None]:
    """Restore before serving; snapshot periodically and on graceful shutdown."""
    settings = app.state.settings
    await restore(app)
    periodic = None
    if settings.snapshot_interval_seconds > 0:
        periodic = asyncio.create_task(_every(app, settings.snapshot_interval_seconds))
    try:
        yield
    finally:
        if periodic is not None:
            periodic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await periodic  # a snapshot in its thread finishes first
        if settings.snapshot_on_shutdown:
            try:
                await take_snapshot(app, "shutdown")
            except StorageError as error:
                log.error("snapshot on shutdown failed, changes since the last snapshot are "
                          "lost: %s", error.detail)
