"""The data directory: one committed snapshot per table, replaced atomically.

    data_dir/tables/<name>/CURRENT         the name of the committed snapshot, e.g. "snap-1f3a..."
    data_dir/tables/<name>/snap-1f3a.../   that snapshot (service.core.snapshots)
    data_dir/tmp/                          snapshots being written; removed at start
    data_dir/trash/                        deleted tables on their way out; removed at start
    data_dir/damaged/                      snapshots skipped at start (skip_damaged=True)
    data_dir/LOCK                          held by the one process using the directory
                                           (service.core.directory_lock); holds its pid

A snapshot is written into tmp/, fsynced, renamed into tables/<name>/ and committed by
replacing CURRENT (write CURRENT.tmp, fsync, rename over CURRENT, fsync the directory); only then
is the previous snapshot removed. A process killed at any moment therefore leaves CURRENT naming
a complete snapshot, the old one or the new one. Anything CURRENT does not name is a leftover of
an interrupted write and is removed by `open()`; a table directory without CURRENT never had a
committed snapshot and is removed too. A deleted table's directory is moved to trash/ in one
rename, so it never comes back after a restart; `delete_table` does that before the table
leaves the registry, so a delete the disk refuses has not happened (a retry completes it).

Snapshots run one at a time (`_run_lock`); commits and deletions of table directories take
`_directory_lock`, so a table deleted while its snapshot was being written is not resurrected.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from service.core.budget import MemoryBudget
from service.core.directory_lock import lock_directory, unlock_directory
from service.core.errors import InvalidRequest, SnapshotDamaged, StorageError, TableNotFound
from service.core.registry import TableRegistry, check_table_name
from service.core.sharded_snapshots import is_sharded, read_sharded_table
from service.core.snapshots import CHUNK_BYTES, WrittenTable, fsync_path, read_table, write_table
from service.core.table_base import Table

POINTER = "CURRENT"


class Deletes(Protocol):
    """What delete_table needs of a registry: a TableRegistry, or cluster mode's catalog."""

    def get(self, name: str) -> Any: ...

    def delete(self, name: str) -> None: ...


@dataclass(frozen=True)
class SnapshotReport:
    written: list[WrittenTable]
    unchanged: list[str]  # tables whose committed snapshot is still up to date
    seconds: float

    @property
    def bytes(self) -> int:
        return sum(table.bytes for table in self.written)


@dataclass
class RestoreReport:
    restored: list[str] = field(default_factory=list)
    skipped: list[tuple[str, Path]] = field(default_factory=list)  # (why, where it was moved)
    seconds: float = 0.0


class SnapshotStore:
    """Snapshots of a registry's tables in `data_dir`. Call `open()` before anything else, and
    `close()` when done (another process may then open the directory).

    >>> store = SnapshotStore(Path("data")); store.open(); store.restore_into(registry)
    >>> store.snapshot(registry).written   # every table that changed since its last snapshot
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        max_bytes_per_second: float = 0.0,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self.data_dir = data_dir
        self.tables_dir = data_dir / "tables"
        self.tmp_dir = data_dir / "tmp"
        self.trash_dir = data_dir / "trash"
        self.damaged_dir = data_dir / "damaged"
        self.max_bytes_per_second = max_bytes_per_second
        self.chunk_bytes = chunk_bytes
        self._run_lock = threading.Lock()
        self._directory_lock = threading.Lock()
        # name -> (the table object, its change count) as of its committed snapshot
        self._committed: dict[str, tuple[weakref.ref[Table], int]] = {}
        self._unlock: weakref.finalize[[Path], SnapshotStore] | None = None

    # -- start and stop ----------------------------------------------------------------------
    def open(self) -> list[Path]:
        """Take the directory for this process (StorageError if another has it), create the
        directories and remove leftovers of interrupted writes; returns them."""
        try:
            for directory in (self.tables_dir, self.tmp_dir, self.trash_dir):
                directory.mkdir(parents=True, exist_ok=True)
            fsync_path(self.data_dir)
        except OSError as error:
            raise StorageError(f"data_dir {self.data_dir} cannot be used: {error}") from None
        lock_directory(self.data_dir)
        # let go on close(), or when the store is collected without one
        self._unlock = weakref.finalize(self, unlock_directory, self.data_dir)
        removed = [*self.tmp_dir.iterdir(), *self.trash_dir.iterdir()]
        for table_dir in self._table_dirs():
            removed.extend(self._leftovers(table_dir))
        for path in removed:
            _remove(path)
        return removed

    def close(self) -> None:
        """Let go of the directory (the last store of this process releases the lock)."""
        if self._unlock is not None:
            self._unlock()

    def _table_dirs(self) -> list[Path]:
        return sorted(p for p in self.tables_dir.iterdir() if p.is_dir() and p.name[0] != ".")

    def _leftovers(self, table_dir: Path) -> list[Path]:
        """What in a table directory CURRENT does not name (all of it if there is no CURRENT).
        A CURRENT that cannot be read is left alone for restore_into to report."""
        pointer = table_dir / POINTER
        if not pointer.exists():
            return [table_dir]
        try:
            current = pointer.read_text().strip()
        except (OSError, UnicodeDecodeError):
            return []
        if not (table_dir / current).is_dir():
            return []
        return [p for p in table_dir.iterdir() if p.name not in (POINTER, current)]

    def restore_into(self, registry: TableRegistry, *, skip_damaged: bool = False) -> RestoreReport:
        """Load every committed table into `registry`. A damaged snapshot raises SnapshotDamaged
        naming the file, or with skip_damaged is moved to damaged/ and reported."""
        report = RestoreReport()
        started = time.perf_counter()
        for table_dir in self._table_dirs():
            try:
                table = self._read(table_dir, registry.budget)
            except SnapshotDamaged as error:
                if not skip_damaged:
                    raise
                report.skipped.append((error.detail, self._set_aside(table_dir)))
                continue
            registry.add(table)
            self._committed[table.name] = (weakref.ref(table), table.changes)
            report.restored.append(table.name)
        report.seconds = time.perf_counter() - started
        return report

    def _read(self, table_dir: Path, budget: MemoryBudget) -> Table:
        try:
            check_table_name(table_dir.name)
        except InvalidRequest as error:
            raise SnapshotDamaged(str(table_dir), error.detail) from None
        current = current_snapshot(table_dir)
        table: Table
        if is_sharded(current):  # written by a cluster-mode service: its parts, put together
            table = read_sharded_table(current, budget)
        else:
            table = read_table(current, budget=budget)
        if table.name != table_dir.name:
            raise SnapshotDamaged(str(current / "meta.json"),
                                  f"is of table {table.name!r}, not {table_dir.name!r}")
        return table

    def _set_aside(self, table_dir: Path) -> Path:
        self.damaged_dir.mkdir(exist_ok=True)
        target = self.damaged_dir / f"{table_dir.name}-{time.strftime('%Y%m%dT%H%M%S')}-" \
                                    f"{uuid.uuid4().hex[:6]}"
        os.rename(table_dir, target)
        return target

    # -- snapshots -----------------------------------------------------------------------------
    def snapshot(self, registry: TableRegistry) -> SnapshotReport:
        """Write every table of `registry` that changed since its last snapshot, one at a time.
        StorageError if the disk refuses (tables committed before that stay committed)."""
        with self._run_lock:
            started = time.perf_counter()
            throttle = self._throttle()
            written: list[WrittenTable] = []
            unchanged: list[str] = []
            for table in registry:
                if self._is_committed(table):
                    unchanged.append(table.name)
                    continue
                result = self._write(registry, table, throttle)
                if result is not None:
                    written.append(result)
            return SnapshotReport(written, unchanged, time.perf_counter() - started)

    def _write(
        self, registry: TableRegistry, table: Table, throttle: Callable[[int], None] | None
    ) -> WrittenTable | None:
        temp = self.tmp_dir / f"{table.name}.{uuid.uuid4().hex[:12]}"
        try:
            result = write_table(table, temp, chunk_bytes=self.chunk_bytes, after_chunk=throttle)
            committed = self._commit(registry, table, temp, result)
        except OSError as error:
            _remove(temp)
            raise StorageError(
                f"the snapshot of table {table.name!r} could not be written to the data "
                f"directory ({self._shown(temp)}): {_reason(error)}"
            ) from None
        return result if committed else None

    def _commit(
        self, registry: TableRegistry, table: Table, temp: Path, result: WrittenTable
    ) -> bool:
        """Make `temp` the table's committed snapshot, unless the table was deleted meanwhile."""
        with self._directory_lock:
            if not _serves(registry, table):
                _remove(temp)
                return False
            stale = commit_directory(self.tables_dir, table.name, temp)
            self._committed[table.name] = (weakref.ref(table), result.changes)
        for path in stale:
            _remove(path)
        return True

    def _is_committed(self, table: Table) -> bool:
        entry = self._committed.get(table.name)
        return (
            entry is not None and entry[0]() is table and entry[1] == table.changes
            and (self.tables_dir / table.name / POINTER).exists()
        )

    def _throttle(self) -> Callable[[int], None] | None:
        """Sleeps that keep one snapshot run at max_bytes_per_second (None: no limit)."""
        rate = self.max_bytes_per_second
        if rate <= 0:
            return None
        started = time.monotonic()
        total = 0

        def after_chunk(nbytes: int) -> None:
            nonlocal total
            total += nbytes
            ahead = total / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)

        return after_chunk

    # -- deletion ------------------------------------------------------------------------------
    def delete_table(self, registry: Deletes, name: str) -> None:
        """Delete table `name` and its snapshot, or neither: the snapshot is moved out first
        (StorageError, table kept, if the disk refuses), then the table leaves the registry.
        Both under the directory lock, so a snapshot of it cannot be committed in between."""
        with self._directory_lock:
            registry.get(name)  # TableNotFound before the disk is touched
            try:
                moved = self._move_to_trash(name)
            except OSError as error:
                raise StorageError(
                    f"table {name!r} was not deleted: its snapshot could not be removed from the "
                    f"data directory ({self._shown(self.tables_dir / name)}): {_reason(error)}"
                ) from None
            self._committed.pop(name, None)
            registry.delete(name)
        if moved is not None:
            _remove(moved)

    def _move_to_trash(self, name: str) -> Path | None:
        """One rename of tables/<name> into trash/ (None: there was none). Caller holds the
        directory lock."""
        table_dir = self.tables_dir / name
        if not table_dir.exists():
            return None
        target = self.trash_dir / f"{name}.{uuid.uuid4().hex[:12]}"
        os.rename(table_dir, target)
        fsync_path(self.tables_dir)
        return target

    def _shown(self, path: Path) -> str:
        """A path as a reply may show it: inside the data directory, never the server's own."""
        try:
            return str(path.relative_to(self.data_dir))
        except ValueError:
            return path.name


def current_snapshot(table_dir: Path) -> Path:
    """The snapshot CURRENT names in a table's directory; SnapshotDamaged if CURRENT cannot be
    read or names no snapshot of that directory."""
    pointer = table_dir / POINTER
    try:
        current = table_dir / pointer.read_text().strip()
    except (OSError, UnicodeDecodeError) as error:
        raise SnapshotDamaged(str(pointer), f"cannot be read ({error})") from None
    if current.parent != table_dir or not current.is_dir():
        raise SnapshotDamaged(str(pointer), f"names {current.name!r}, which does not exist")
    return current


def committed_snapshot(table_dir: Path) -> Path | None:
    """current_snapshot, or None where the table's directory has no CURRENT (nothing
    committed yet)."""
    if not (table_dir / POINTER).exists():
        return None
    return current_snapshot(table_dir)


def commit_directory(tables_dir: Path, name: str, temp: Path) -> list[Path]:
    """Make the complete snapshot `temp` (tmp/<name>.<id>, fsynced) table `name`'s committed
    one: rename it to tables/<name>/snap-<id>, then replace CURRENT (written, fsynced, renamed
    over the old, the directory fsynced). Returns what the table's directory holds besides
    (the previous snapshot) for the caller to remove. The caller holds the lock that keeps
    commits and deletions of the directory apart."""
    table_dir = tables_dir / name
    if not table_dir.is_dir():
        table_dir.mkdir()
        fsync_path(tables_dir)
    snapshot_dir = table_dir / f"snap-{temp.name.rsplit('.', 1)[1]}"
    os.rename(temp, snapshot_dir)
    fsync_path(table_dir)
    pointer_temp = table_dir / f"{POINTER}.tmp"
    with open(pointer_temp, "w") as pointer:
        pointer.write(snapshot_dir.name + "\n")
        pointer.flush()
        os.fsync(pointer.fileno())
    os.replace(pointer_temp, table_dir / POINTER)
    fsync_path(table_dir)
    return [p for p in table_dir.iterdir() if p.name not in (POINTER, snapshot_dir.name)]


def _serves(registry: TableRegistry, table: Table) -> bool:
    try:
        return registry.get(table.name) is table
    except TableNotFound:
        return False


def _reason(error: OSError) -> str:
    """What went wrong, without the paths an OSError's text carries."""
    return error.strerror or type(error).__name__


def _remove(path: Path) -> None:
    """Best effort: what cannot be removed now is removed by the next open()."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass
