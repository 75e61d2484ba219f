"""One table's snapshot on disk, in numpy's own formats: readable without the service.

`write_table` and `read_table` serve both kinds of table: a dynamic table's layout (keys and
their rows, sorted by key) is service.core.dynamic.snapshots'; a fixed table's is this module's,
and the file-level pieces both use are service.core.snapshot_files'. A fixed table's snapshot
directory holds

    meta.json          name, shape, dtype, init, seed, optimizer config, max_staleness, step,
                       pushes since the last apply, format version, the byte size of every file
    weights.npy        (num_embeddings, embedding_dim)
    state.<name>.npy   one per optimizer state array (adam: state.exp_avg.npy, state.exp_avg_sq.npy)
    pending_rows.npy   (k,) int64: rows with a pushed, not yet applied gradient
    pending_sums.npy   (k, embedding_dim): their summed gradient
    labels.json        {"ids": [...], "labels": [...]}, sorted by id (only if the table has
                       labels; service.core.labels)

    >>> weights = np.load("data/tables/words/snap-1f3a.../weights.npy")   # no service needed

Consistent without holding the table's lock for the whole write, and without a second copy of
the table in memory: `write_table` asks the table to mark every row whose weights or optimizer
state changes from now on, streams the live arrays to disk (other requests keep running), then,
under the lock, rewrites the marked rows in the files from the live arrays and reads the step
and the pending gradient. The files then hold the table exactly as it was at that instant. The
lock is held only for the marked rows (those trained during the write), and the extra memory is
one byte a row for the marks plus one bounded batch of rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from service.core.budget import MemoryBudget
from service.core.errors import EmbeddingServiceError, SnapshotDamaged
from service.core.initializers import InitSpec
from service.core.optimizers import make_optimizer
from service.core.snapshot_changes import TablePoint
from service.core.snapshot_files import (
    CHUNK_BYTES,
    LABELS,
    META,
    WrittenTable,
    check_size,
    damaged_meta,
    finish,
    fsync_path,
    load_array,
    meta_count,
    read_labels,
    read_meta,
    state_file,
    stream_npy,
)
from service.core.table import DTYPES, EmbeddingTable
from service.core.table_base import Table

FORMAT = "embedding-service-table-snapshot"
FORMAT_VERSION = 1
WEIGHTS = "weights.npy"
PENDING_ROWS = "pending_rows.npy"
PENDING_SUMS = "pending_sums.npy"

__all__ = ["CHUNK_BYTES", "WrittenTable", "fsync_path", "read_table", "state_file",
           "write_table"]


def _row_arrays(table: EmbeddingTable) -> dict[str, np.ndarray]:
    """The (num_embeddings, dim) arrays of the table by file name: weights and optimizer state."""
    return {WEIGHTS: table.weights, **{state_file(k): v for k, v in table.state.items()}}


# -- writing ---------------------------------------------------------------------------------------
def write_table(
    table: Table,
    directory: Path,
    *,
    chunk_bytes: int = CHUNK_BYTES,
    after_chunk: Callable[[int], None] | None = None,
) -> WrittenTable:
    """Write `table` into `directory` (created here; it must not exist), every file and the
    directory fsynced. `after_chunk(nbytes)` runs after each chunk of a large array (throttle)."""
    if not isinstance(table, EmbeddingTable):
        from service.core.dynamic import snapshots as dynamic_snapshots
        from service.core.dynamic.table import DynamicTable

        assert isinstance(table, DynamicTable), type(table)
        return dynamic_snapshots.write_dynamic(table, directory, chunk_bytes=chunk_bytes,
                                               after_chunk=after_chunk)
    write = TableWrite(table, directory, chunk_bytes=chunk_bytes, after_chunk=after_chunk)
    try:
        write.capture()
    finally:
        write.cancel()  # a no-op once captured
    return write.complete()


class TableWrite:
    """write_table in its three phases, for callers that need the instant to be theirs (a
    cluster-mode table takes every shard's instant while no step runs, service.cluster):

    - TableWrite(table, directory): create the directory, mark changed rows from now on and
      stream the weights and optimizer state (long; the table keeps training);
    - capture(): the instant. Rewrite the rows changed since, and read the step and the
      pending gradient, under the table's lock;
    - complete(extra): the pending gradient, labels, `extra` files, meta.json, fsync.

    cancel() stops the marking if capture() is not reached (a no-op after it)."""

    def __init__(
        self,
        table: EmbeddingTable,
        directory: Path,
        *,
        chunk_bytes: int = CHUNK_BYTES,
        after_chunk: Callable[[int], None] | None = None,
    ) -> None:
        self.table = table
        self.directory = directory
        self.chunk_bytes = chunk_bytes
        self.started = time.perf_counter()
        self.point: TablePoint | None = None
        self.header_bytes: dict[str, int] = {}
        directory.mkdir()
        table.start_change_tracking()
        try:
            for file_name, array in _row_arrays(table).items():
                self.header_bytes[file_name] = stream_npy(
                    directory / file_name, array, chunk_bytes, after_chunk
                )
        except BaseException:
            table.cancel_change_tracking()
            raise

    def capture(self) -> TablePoint:
        """The instant the snapshot holds (see the class)."""
        self.point = self.table.end_change_tracking(
            lambda rows: _rewrite_rows(self.directory, self.table, rows, self.header_bytes,
                                       self.chunk_bytes)
        )
        return self.point

    def cancel(self) -> None:
        self.table.cancel_change_tracking()

    def complete(self, extra: dict[str, bytes] | None = None) -> WrittenTable:
        """Write the rest and fsync; `extra` files (name -> bytes) are listed in meta.json and
        size-checked on reading like the table's own."""
        point, table, directory = self.point, self.table, self.directory
        assert point is not None, "capture() first"
        rows = point.pending_rows.astype(np.int64, copy=False)  # (k,)
        stream_npy(directory / PENDING_ROWS, rows, self.chunk_bytes, None)
        stream_npy(directory / PENDING_SUMS, point.pending_sums, self.chunk_bytes,
                    None)  # (k, dim)
        if len(table.labels):  # read after the point: a later change is counted after it too
            (directory / LABELS).write_bytes(table.labels.to_json())
        for name, content in (extra or {}).items():
            (directory / name).write_bytes(content)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": table.name,
            "num_embeddings": table.num_embeddings,
            "embedding_dim": table.embedding_dim,
            "dtype": table.dtype.name,
            "init": table.init.as_dict(),
            "seed": table.seed,
            "optimizer": point.optimizer,
            "max_staleness": table.max_staleness,
            "step": point.step,
            "pending_rows": len(point.pending_rows),
            "pushes_since_apply": point.pushes_since_apply,
        }
        return finish(directory, meta, table.name, point.step, point.changes, self.started)


def _rewrite_rows(
    directory: Path,
    table: EmbeddingTable,
    rows: np.ndarray,
    header_bytes: dict[str, int],
    chunk_bytes: int,
) -> None:
    """Copy `rows` of the live arrays into the files written by stream_npy, in batches of at
    most chunk_bytes. The caller (end_change_tracking) holds the table lock."""
    if rows.size == 0:
        return
    live = _row_arrays(table)
    for file_name, offset in header_bytes.items():
        array = live[file_name]
        on_disk = np.memmap(directory / file_name, dtype=array.dtype, mode="r+", offset=offset,
                            shape=array.shape)
        rows_per_batch = max(1, chunk_bytes // max(1, array[0].nbytes))
        for start in range(0, len(rows), rows_per_batch):
            batch = rows[start : start + rows_per_batch]
            on_disk[batch] = array[batch]
        on_disk.flush()
        on_disk._mmap.close()  # type: ignore[attr-defined]  # unmap now, not at garbage collection
        del on_disk


# -- reading ---------------------------------------------------------------------------------------
def read_table(
    directory: Path, *, budget: MemoryBudget | None = None,
    label_check: Callable[[np.ndarray], None] | None = None,
) -> Table:
    """The table a snapshot directory holds, bit-identical to what was written, made with
    `budget` (its registry's). SnapshotDamaged names the file at fault if anything is missing,
    truncated or inconsistent, or if it is of a layout this version does not read. Label ids
    are checked with `label_check` (default: the table's own ids; a shard's part labels table
    ids, service.core.sharded_snapshots)."""
    meta = read_meta(directory)
    from service.core.dynamic import snapshots as dynamic_snapshots

    if meta.get("format") == dynamic_snapshots.FORMAT:
        return dynamic_snapshots.read_dynamic(directory, meta, budget=budget,
                                             label_check=label_check)
    meta_path = directory / META
    try:
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format {meta.get('format')!r} version "
                             f"{meta.get('format_version')!r} is not {FORMAT!r} {FORMAT_VERSION}")
        # a part of a sharded table may hold no row (service.core.sharded_snapshots)
        shape = (meta_count(meta, "num_embeddings", 0), meta_count(meta, "embedding_dim", 1))
        dtype = DTYPES[meta["dtype"]]
        optimizer = make_optimizer(meta["optimizer"])
        init = InitSpec(**meta["init"])
        step, pending = meta_count(meta, "step", 0), meta_count(meta, "pending_rows", 0)
        pushes = meta_count(meta, "pushes_since_apply", 0)
        files: dict[str, Any] = meta["files"]
        expected = [WEIGHTS, *map(state_file, optimizer.state_names), PENDING_ROWS, PENDING_SUMS]
        missing = [name for name in expected if name not in files]
        if missing:
            raise ValueError(f"lists no {missing[0]}")
    except (KeyError, TypeError, ValueError, EmbeddingServiceError) as error:
        raise damaged_meta(meta_path, error) from None
    for name in expected:
        check_size(directory / name, files[name])
    weights = load_array(directory / WEIGHTS, shape, dtype)
    state = {name: load_array(directory / state_file(name), shape, dtype)
             for name in optimizer.state_names}
    rows = load_array(directory / PENDING_ROWS, (pending,), np.dtype(np.int64))
    sums = load_array(directory / PENDING_SUMS, (pending, shape[1]), dtype)
    if pending and (rows.min() < 0 or rows.max() >= shape[0] or len(np.unique(rows)) != pending):
        raise SnapshotDamaged(str(directory / PENDING_ROWS),
                              f"rows must be distinct and in [0, {shape[0]})")
    table = EmbeddingTable(
        meta["name"], shape[0], shape[1], optimizer, dtype=meta["dtype"], init=init,
        seed=meta.get("seed"), max_staleness=meta.get("max_staleness"), weights=weights,
        state=state, budget=budget,
    )
    table.step = step
    table.restore_pending(rows, sums, pushes)
    read_labels(directory, files, table, label_check)
    return table

