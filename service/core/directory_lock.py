"""One process per data directory: an exclusive lock on data_dir/LOCK (fcntl.flock).

Two services on one data directory would overwrite each other's snapshots, and each would remove
the other's in-flight files as leftovers of an interrupted write. The lock is taken when a
SnapshotStore opens the directory, before anything there is touched, and held until the store
closes, or the process ends: the kernel lets go of a flock with the last descriptor on it,
SIGKILL included, so a crashed service never leaves a stale lock. LOCK holds the holder's pid,
so a refusal can name it.

Stores of one process share the lock (a test that simulates a restart opens a second store on
the same directory); it is let go when the last of them closes.

    lock_directory(Path("data"))     # StorageError: "data_dir data is in use by another
    ...                              #  process (pid 4242); ..."
    unlock_directory(Path("data"))
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from service.core.errors import StorageError

LOCK_FILE = "LOCK"

_guard = threading.Lock()
_held: dict[Path, list[int]] = {}  # resolved directory -> [descriptor, stores holding it]


def lock_directory(directory: Path) -> None:
    """Take the directory for this process; StorageError naming the holder if another has it."""
    key = directory.resolve()
    with _guard:
        held = _held.get(key)
        if held is not None:
            held[1] += 1
            return
        try:
            descriptor = os.open(key / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise StorageError(f"data_dir {directory} cannot be used: {error}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            if isinstance(error, BlockingIOError):
                raise StorageError(
                    f"data_dir {directory} is in use by another process (pid {holder}); two "
                    "services on one data directory would overwrite each other's snapshots"
                ) from None
            raise StorageError(f"data_dir {directory} cannot be locked: {error}") from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        _held[key] = [descriptor, 1]


def unlock_directory(directory: Path) -> None:
    """One store of this process lets go; the last one releases the lock."""
    key = directory.resolve()
    with _guard:
        held = _held.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del _held[key]
            os.close(held[0])
