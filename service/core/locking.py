"""A table's lock, taken one way: `with lock.held(wait):`.

Every operation on a table holds its lock for the whole of what it reads and changes. On the
event loop a caller cannot wait for the lock (every other request would wait too), so
`held(wait=False)` raises TableBusy, with nothing done, and the caller runs the operation again
where waiting is fine (a worker thread). A plain class rather than @contextmanager: it is taken
on every lookup, and a generator-based context costs microseconds.
"""

from __future__ import annotations

import threading


class TableBusy(Exception):
    """Another operation holds the table. Raised only by calls made with wait=False, before
    anything changed: the caller runs the operation again where waiting is fine (a thread)."""


class TableLock:
    """The lock of table `name`."""

    __slots__ = ("_lock", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()

    def held(self, wait: bool = True) -> TableLock:
        """Take the lock (TableBusy at once if wait=False and another holds it); the with-block
        releases it."""
        if not self._lock.acquire(blocking=wait):
            raise TableBusy(self.name)
        return self

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()
