"""The catalog's snapshots (service.cluster.catalog): writing one table's shards as one
snapshot (service.core.sharded_snapshots, committed as service.core.snapshot_store commits), and
reading back which table a committed snapshot holds when the service starts.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.cluster.catalog_records import TableRecord
from service.cluster.placement import TableSpec
from service.cluster.runtime import result
from service.core.errors import SnapshotDamaged, StorageError, TableNotFound
from service.core.sharded_snapshots import is_sharded, part_name, read_set_meta, write_set_meta
from service.core.snapshot_files import META
from service.core.snapshot_store import POINTER, SnapshotStore, commit_directory


def write_table_snapshot(store: SnapshotStore, table: TableRecord, handles: list[Any],
                         still_held: Callable[[], bool]) -> dict[str, Any] | None:
    """Snapshot one table over its shard servers (`handles`, by shard): each shard's rows
    streamed, then all shards' instants taken between two steps, then committed as one
    snapshot. None if nothing changed since its last snapshot, or if the table was deleted
    meanwhile (`still_held()` false at the commit, asked under the store's directory lock)."""
    name = table.spec.name
    if table.committed is not None and result(
            [handle.changes.remote() for handle in handles]) == table.committed \
            and (store.tables_dir / name / POINTER).exists():
        return None
    started = time.perf_counter()
    temp = store.tmp_dir / f"{name}.{uuid.uuid4().hex[:12]}"
    temp.mkdir()
    try:
        result([handle.snapshot_begin.remote(str(temp / part_name(shard)))
                for shard, handle in enumerate(handles)])
        step = result(handles[0].snapshot_capture.remote())
        parts = result([handle.snapshot_complete.remote() for handle in handles])
        write_set_meta(temp, name=name, shards=table.shards, step=step,
                       num_embeddings=table.spec.num_embeddings)
        with store._directory_lock:
            if not still_held():  # deleted meanwhile
                raise TableNotFound(name)
            stale = commit_directory(store.tables_dir, name, temp)
            table.committed = [part["changes"] for part in parts]
    except BaseException as error:
        for handle in handles:
            handle.snapshot_cancel.remote()
        remove_path(temp)
        if isinstance(error, TableNotFound):
            return None
        if isinstance(error, OSError):
            raise StorageError(f"the snapshot of table {name!r} could not be written to "
                               f"the data directory: {error.strerror}") from None
        raise
    for path in stale:
        remove_path(path)
    return {"name": name, "step": step, "bytes": sum(part["bytes"] for part in parts),
            "seconds": time.perf_counter() - started}


def spec_of(snapshot: Path) -> tuple[TableSpec, int | None]:
    """The table a snapshot holds (its create fields), and its shard count if sharded."""
    import json

    meta_dir, count, shards = snapshot, None, None
    if is_sharded(snapshot):
        set_meta = read_set_meta(snapshot)
        meta_dir, count, shards = snapshot / part_name(0), set_meta["num_embeddings"], \
            set_meta["shards"]
    try:
        meta = json.loads((meta_dir / META).read_text())
        dynamic = meta.get("dynamic")  # a dynamic table's settings (no num_embeddings)
        spec = TableSpec(meta["name"], count if count is not None or dynamic is not None
                         else meta["num_embeddings"],
                         meta["embedding_dim"], meta["dtype"], meta["init"], meta.get("seed"),
                         meta["optimizer"], meta.get("max_staleness"), dynamic)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SnapshotDamaged(str(meta_dir / META), f"cannot be read ({error})") from None
    return spec, shards


def remove_path(path: Path) -> None:
    """Best effort: a file or a directory tree."""
    import shutil

    with contextlib.suppress(OSError):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
