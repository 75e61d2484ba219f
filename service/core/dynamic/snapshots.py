"""A dynamic table's snapshot on disk: plain arrays in ascending key order, in numpy's formats.

    meta.json                 format, layout_version, name, embedding_dim, dtype, init, seed,
                              optimizer, max_staleness, dynamic settings, step, rows,
                              evicted_rows, pending_rows, pushes_since_apply, admission
                              {candidates, pushes, forgotten} (or null), the size of every file
    keys.npy                  (n,) int64, ascending: the keys with a row
    weights.npy               (n, embedding_dim): their rows, in the same order
    state.<name>.npy          (n, embedding_dim): each optimizer state array, same order
    last_step.npy             (n,) int64: the step that last updated each row
    updates.npy               (n,) int64: how many steps updated it
    pending_rows.npy          (k,) int64: keys with a pushed, not yet applied gradient
    pending_sums.npy          (k, embedding_dim): their summed gradient
    admission_keys.npy        (c,) int64 ascending: keys counted for admission (admit_after > 1)
    admission_counts.npy      (c,) int64: pushes each appeared in
    admission_last_push.npy   (c,) int64: the admission clock at its last push
    labels.json               {"ids": [...], "labels": [...]} (only if the table has labels)

Everything per key is sorted by key, so a snapshot splits by key: a shard of a key-hashed table
takes the positions of its keys from every per-key array (the rows, the bookkeeping, the
admission candidates, the pending gradient). Slots, buckets and list links are not stored: they
are rebuilt from these arrays (eviction and admission orders are functions of them and the
keys), so a restored table continues bit for bit.

The layout has a version (`LAYOUT_VERSION`); a snapshot of another version is refused with a
SnapshotDamaged that says so, never read as this one. Consistency: the table captures its
contents at one instant and keeps the rows of that instant aside as they change (copy on
write, service.core.dynamic.slot_rows), so the rows stream to disk without holding the lock.
Crash safety is the snapshot store's (service.core.snapshot_store): this writes one directory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from service import npy
from service.core.budget import MemoryBudget
from service.core.dynamic.contents import Contents
from service.core.dynamic.spec import check_spec
from service.core.dynamic.table import DynamicTable
from service.core.errors import EmbeddingServiceError, SnapshotDamaged
from service.core.initializers import InitSpec
from service.core.optimizers import make_optimizer
from service.core.snapshot_files import (
    CHUNK_BYTES,
    LABELS,
    META,
    WrittenTable,
    check_size,
    damaged_meta,
    finish,
    load_array,
    meta_count,
    read_labels,
    state_file,
    stream_npy,
    write_all,
)
from service.core.table_base import DTYPES

FORMAT = "embedding-service-dynamic-table-snapshot"
LAYOUT_VERSION = 1
KEY_ARRAYS = ("keys", "last_step", "updates")  # (n,) int64 each
ADMISSION_ARRAYS = ("keys", "counts", "last_push")  # admission_<name>.npy, (c,) int64 each


def _row_files(table: DynamicTable) -> list[tuple[str, str]]:
    """(array name, file name) of the (n, dim) arrays: weights, then optimizer state."""
    return [("weights", "weights.npy"),
            *((name, state_file(name)) for name in table.optimizer.state_names)]


def write_dynamic(
    table: DynamicTable,
    directory: Path,
    *,
    chunk_bytes: int = CHUNK_BYTES,
    after_chunk: Callable[[int], None] | None = None,
) -> WrittenTable:
    """Write `table` into `directory` (created here), as of one instant."""
    started = time.perf_counter()
    directory.mkdir()
    contents = table.capture()
    return write_captured(table, directory, contents, started, chunk_bytes=chunk_bytes,
                          after_chunk=after_chunk)


def write_captured(
    table: DynamicTable,
    directory: Path,
    contents: Contents,
    started: float,
    *,
    chunk_bytes: int = CHUNK_BYTES,
    after_chunk: Callable[[int], None] | None = None,
    extra: dict[str, bytes] | None = None,
) -> WrittenTable:
    """The files of a capture the caller took (table.capture(): a cluster-mode shard takes it
    at the instant its leader chooses) into the existing `directory`, `extra` files beside
    them (listed in meta.json); the capture is released."""
    try:
        _stream_rows(table, directory, contents, chunk_bytes, after_chunk)
    finally:
        table.release()
    arrays: dict[str, np.ndarray] = {
        "keys.npy": contents.keys, "last_step.npy": contents.last_step,
        "updates.npy": contents.updates, "pending_rows.npy": contents.pending_rows,
        "pending_sums.npy": contents.pending_sums}
    if contents.admission is not None:
        for name in ADMISSION_ARRAYS:
            arrays[f"admission_{name}.npy"] = contents.admission[name]
    for file_name, array in arrays.items():
        stream_npy(directory / file_name, np.ascontiguousarray(array), chunk_bytes, None)
    if len(table.labels):
        (directory / LABELS).write_bytes(table.labels.to_json())
    for file_name, content in (extra or {}).items():
        (directory / file_name).write_bytes(content)
    admission = None if contents.admission is None else {
        "candidates": len(contents.admission["keys"]),
        "pushes": int(contents.admission["pushes"]),
        "forgotten": int(contents.admission["forgotten"])}
    meta = {
        "format": FORMAT, "layout_version": LAYOUT_VERSION, "name": table.name,
        "embedding_dim": table.embedding_dim, "dtype": table.dtype.name,
        "init": table.init.as_dict(), "seed": table.seed, "optimizer": contents.optimizer,
        "max_staleness": table.max_staleness, "dynamic": table.settings.as_dict(),
        "step": contents.step, "rows": len(contents.keys),
        "evicted_rows": contents.evicted_rows, "pending_rows": len(contents.pending_rows),
        "pushes_since_apply": contents.pushes_since_apply, "admission": admission,
    }
    return finish(directory, meta, table.name, contents.step, contents.changes, started)


def _stream_rows(table: DynamicTable, directory: Path, contents: Contents, chunk_bytes: int,
                 after_chunk: Callable[[int], None] | None) -> None:
    """Every row array as one .npy each, written chunk by chunk in key order: each chunk of
    rows read under the lock as of the capture (service.core.dynamic.slot_rows)."""
    count, dim = len(contents.keys), table.embedding_dim
    files = [(name, open(directory / file_name, "xb", buffering=0))  # noqa: SIM115
             for name, file_name in _row_files(table)]
    try:
        for _, file in files:
            write_all(file, memoryview(npy.header(table.dtype, (count, dim))))
        rows_per_chunk = max(1, chunk_bytes // (dim * table.dtype.itemsize * len(files)))
        for start in range(0, count, rows_per_chunk):
            rows = table.captured_rows(contents.slots[start : start + rows_per_chunk])
            for name, file in files:
                write_all(file, memoryview(rows[name]).cast("B"))  # type: ignore[arg-type]
            if after_chunk is not None:
                after_chunk(sum(array.nbytes for array in rows.values()))
    finally:
        for _, file in files:
            file.close()


def read_dynamic(directory: Path, meta: dict[str, Any], *,
                 budget: MemoryBudget | None = None,
                 label_check: Callable[[np.ndarray], None] | None = None) -> DynamicTable:
    """The dynamic table a snapshot directory holds (meta: its meta.json, read)."""
    meta_path = directory / META
    version = meta.get("layout_version")
    if version != LAYOUT_VERSION:
        raise SnapshotDamaged(str(meta_path), (
            f"is a dynamic-table snapshot of layout version {version!r}; this service reads "
            f"layout version {LAYOUT_VERSION} only (restore it with the version that wrote it, "
            "or move it out of the data directory)"))
    try:
        dim, dtype = meta_count(meta, "embedding_dim", 1), DTYPES[meta["dtype"]]
        optimizer = make_optimizer(meta["optimizer"])
        settings = check_spec(meta["dynamic"])
        counts = {field: meta_count(meta, field, 0) for field in
                  ("step", "rows", "evicted_rows", "pending_rows", "pushes_since_apply")}
        admission = meta["admission"]
        if (admission is None) != (settings.admit_after == 1):
            raise ValueError("admission must be recorded exactly when admit_after > 1")
        table = DynamicTable(meta["name"], dim, optimizer, settings=settings,
                             dtype=meta["dtype"], init=InitSpec(**meta["init"]),
                             seed=meta_count(meta, "seed", 0),
                             max_staleness=meta.get("max_staleness"), budget=budget)
        files: dict[str, Any] = meta["files"]
    except (KeyError, TypeError, ValueError, EmbeddingServiceError) as error:
        raise damaged_meta(meta_path, error) from None
    rows, step = counts["rows"], counts["step"]
    load = _loader(directory, files)
    per_key = {name: load(f"{name}.npy", (rows,), np.int64) for name in KEY_ARRAYS}
    row_arrays = {name: load(file_name, (rows, dim), dtype)
                  for name, file_name in _row_files(table)}
    pending_rows = load("pending_rows.npy", (counts["pending_rows"],), np.int64)
    pending_sums = load("pending_sums.npy", (counts["pending_rows"], dim), dtype)
    candidates = None
    if admission is not None:
        size = meta_count(admission, "candidates", 0)
        candidates = {name: load(f"admission_{name}.npy", (size,), np.int64)
                      for name in ADMISSION_ARRAYS}
        candidates["pushes"] = np.array(meta_count(admission, "pushes", 0))
        candidates["forgotten"] = np.array(meta_count(admission, "forgotten", 0))
        _check_keys(directory / "admission_keys.npy", candidates["keys"])
    _check_keys(directory / "keys.npy", per_key["keys"])
    last_step, updates = per_key["last_step"], per_key["updates"]
    if rows and (last_step.min() < 0 or last_step.max() > step or updates.min() < 1):
        raise SnapshotDamaged(str(directory / "last_step.npy"),
                              f"steps must be in [0, {step}] and updates >= 1")
    if len(np.unique(pending_rows)) != len(pending_rows):
        raise SnapshotDamaged(str(directory / "pending_rows.npy"), "keys must be distinct")
    contents = Contents(per_key["keys"], np.arange(rows), last_step, updates, candidates,
                        pending_rows, pending_sums, counts["pushes_since_apply"], step,
                        counts["evicted_rows"], 0, meta["optimizer"])
    try:
        table.restore(contents, row_arrays)
    except ValueError as error:  # the building blocks' own consistency checks
        raise SnapshotDamaged(str(directory), str(error)) from None
    read_labels(directory, files, table, label_check)
    return table


def _loader(directory: Path, files: dict[str, Any]) -> Callable[..., np.ndarray]:
    def load(file_name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        if file_name not in files:
            raise SnapshotDamaged(str(directory / META), f"lists no {file_name}")
        check_size(directory / file_name, files[file_name])
        return load_array(directory / file_name, shape, np.dtype(dtype))

    return load


def _check_keys(path: Path, keys: np.ndarray) -> None:
    if len(keys) > 1 and not (keys[1:] > keys[:-1]).all():
        raise SnapshotDamaged(str(path), "keys must be distinct and ascending")


__all__ = ["FORMAT", "LAYOUT_VERSION", "read_dynamic", "write_captured", "write_dynamic"]
