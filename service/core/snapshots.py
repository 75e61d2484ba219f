"""One table's snapshot on disk, in numpy's own formats: readable without the service.

A snapshot directory holds

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

import errno
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from service import npy
from service.core.budget import MemoryBudget
from service.core.errors import EmbeddingServiceError, SnapshotDamaged
from service.core.initializers import InitSpec
from service.core.optimizers import make_optimizer
from service.core.table import DTYPES, EmbeddingTable

FORMAT = "embedding-service-table-snapshot"
FORMAT_VERSION = 1
META = "meta.json"
WEIGHTS = "weights.npy"
PENDING_ROWS = "pending_rows.npy"
PENDING_SUMS = "pending_sums.npy"
LABELS = "labels.json"
CHUNK_BYTES = 64 * 2**20  # one write call; also the bound on a batch of rewritten rows


@dataclass(frozen=True)
class WrittenTable:
    """What write_table wrote: the table as of `step` (and its change count `changes`)."""

    name: str
    step: int
    changes: int
    bytes: int
    seconds: float


def state_file(state_name: str) -> str:
    return f"state.{state_name}.npy"


def _row_arrays(table: EmbeddingTable) -> dict[str, np.ndarray]:
    """The (num_embeddings, dim) arrays of the table by file name: weights and optimizer state."""
    return {WEIGHTS: table.weights, **{state_file(k): v for k, v in table.state.items()}}


# -- writing ---------------------------------------------------------------------------------------
def write_table(
    table: EmbeddingTable,
    directory: Path,
    *,
    chunk_bytes: int = CHUNK_BYTES,
    after_chunk: Callable[[int], None] | None = None,
) -> WrittenTable:
    """Write `table` into `directory` (created here; it must not exist), every file and the
    directory fsynced. `after_chunk(nbytes)` runs after each chunk of a large array (throttle)."""
    started = time.perf_counter()
    directory.mkdir()
    header_bytes: dict[str, int] = {}
    table.start_change_tracking()
    try:
        for file_name, array in _row_arrays(table).items():
            header_bytes[file_name] = _stream_npy(
                directory / file_name, array, chunk_bytes, after_chunk
            )
        point = table.end_change_tracking(
            lambda rows: _rewrite_rows(directory, table, rows, header_bytes, chunk_bytes)
        )
    finally:
        table.cancel_change_tracking()  # a no-op once end_change_tracking ran
    rows = point.pending_rows.astype(np.int64, copy=False)  # (k,)
    _stream_npy(directory / PENDING_ROWS, rows, chunk_bytes, None)
    _stream_npy(directory / PENDING_SUMS, point.pending_sums, chunk_bytes, None)  # (k, dim)
    if len(table.labels):  # read after the point: a later change is counted after it too
        (directory / LABELS).write_bytes(table.labels.to_json())
    files = {path.name: path.stat().st_size for path in sorted(directory.iterdir())}
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
        "files": files,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (directory / META).write_text(json.dumps(meta, indent=2) + "\n")
    for name in [*files, META]:
        fsync_path(directory / name)
    fsync_path(directory)
    total = sum(files.values()) + (directory / META).stat().st_size
    return WrittenTable(table.name, point.step, point.changes, total,
                        time.perf_counter() - started)


def _stream_npy(
    path: Path, array: np.ndarray, chunk_bytes: int, after_chunk: Callable[[int], None] | None
) -> int:
    """Write `array` as .npy straight from its buffer, chunk by chunk, without the table lock.
    Returns the header length (where the data starts)."""
    header = npy.header(array.dtype, array.shape)  # np.save's
    with open(path, "xb", buffering=0) as file:
        _write_all(file, memoryview(header))
        row_bytes = max(1, array[0].nbytes if len(array) else 1)
        rows_per_chunk = max(1, chunk_bytes // row_bytes)
        for start in range(0, len(array), rows_per_chunk):
            chunk = np.ascontiguousarray(array[start : start + rows_per_chunk])  # a view if C-order
            _write_all(file, chunk.data.cast("B"))
            if after_chunk is not None:
                after_chunk(chunk.nbytes)
    return len(header)


def _write_all(file: BinaryIO, view: memoryview) -> None:
    while view:  # an unbuffered write may take part of it
        view = view[file.write(view) :]


def _rewrite_rows(
    directory: Path,
    table: EmbeddingTable,
    rows: np.ndarray,
    header_bytes: dict[str, int],
    chunk_bytes: int,
) -> None:
    """Copy `rows` of the live arrays into the files written by _stream_npy, in batches of at
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


def fsync_path(path: Path) -> None:
    """Flush a file's (or a directory's entries') data to the disk. Filesystems that cannot
    fsync a directory (EINVAL: some network and bind mounts) only skip the directory's."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno != errno.EINVAL or not path.is_dir():
            raise
    finally:
        os.close(descriptor)


# -- reading ---------------------------------------------------------------------------------------
def read_table(directory: Path, *, budget: MemoryBudget | None = None) -> EmbeddingTable:
    """The table a snapshot directory holds, bit-identical to what was written, made with
    `budget` (its registry's). SnapshotDamaged names the file at fault if anything is missing,
    truncated or inconsistent."""
    meta_path = directory / META
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SnapshotDamaged(str(meta_path), f"cannot be read as JSON ({error})") from None
    try:
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format {meta.get('format')!r} version "
                             f"{meta.get('format_version')!r} is not {FORMAT!r} {FORMAT_VERSION}")
        shape = (_count(meta, "num_embeddings", 1), _count(meta, "embedding_dim", 1))
        dtype = DTYPES[meta["dtype"]]
        optimizer = make_optimizer(meta["optimizer"])
        init = InitSpec(**meta["init"])
        step, pending = _count(meta, "step", 0), _count(meta, "pending_rows", 0)
        pushes = _count(meta, "pushes_since_apply", 0)
        files: dict[str, Any] = meta["files"]
        expected = [WEIGHTS, *map(state_file, optimizer.state_names), PENDING_ROWS, PENDING_SUMS]
        missing = [name for name in expected if name not in files]
        if missing:
            raise ValueError(f"lists no {missing[0]}")
    except (KeyError, TypeError, ValueError, EmbeddingServiceError) as error:
        detail = getattr(error, "detail", None) or (
            f"lacks {error}" if isinstance(error, KeyError) else str(error))
        raise SnapshotDamaged(str(meta_path), detail) from None
    for name in expected:
        _check_size(directory / name, files[name])
    weights = _load(directory / WEIGHTS, shape, dtype)
    state = {name: _load(directory / state_file(name), shape, dtype)
             for name in optimizer.state_names}
    rows = _load(directory / PENDING_ROWS, (pending,), np.dtype(np.int64))
    sums = _load(directory / PENDING_SUMS, (pending, shape[1]), dtype)
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
    if LABELS in files:
        _check_size(directory / LABELS, files[LABELS])
        try:
            table.labels.load_json((directory / LABELS).read_bytes(), table.check_ids)
        except EmbeddingServiceError as error:
            raise SnapshotDamaged(str(directory / LABELS), error.detail) from None
    return table


def _count(meta: dict[str, Any], field: str, minimum: int) -> int:
    value = meta[field]
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{field} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_size(path: Path, recorded: Any) -> None:
    try:
        size = path.stat().st_size
    except OSError as error:
        raise SnapshotDamaged(str(path), f"is missing ({error.strerror})") from None
    if size != recorded:
        raise SnapshotDamaged(
            str(path), f"is {size} bytes but meta.json recorded {recorded} (truncated or altered)"
        )


def _load(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    try:
        with open(path, "rb") as file:
            array = npy.load(file, field=path.name)
    except (OSError, npy.NpyError) as error:
        raise SnapshotDamaged(str(path), f"is not a readable .npy ({error})") from None
    if array.shape != shape or array.dtype != dtype:
        raise SnapshotDamaged(
            str(path), f"holds {list(array.shape)} {array.dtype}, meta.json says "
            f"{list(shape)} {dtype}"
        )
    return array
