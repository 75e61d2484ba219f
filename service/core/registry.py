"""The named tables of one service, with the limits on how many and how large."""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterator
from typing import Any

from service.core.errors import BudgetExceeded, InvalidRequest, TableExists, TableNotFound
from service.core.initializers import InitSpec
from service.core.optimizers import make_optimizer
from service.core.table import DTYPES, EmbeddingTable

TABLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


def check_table_name(name: str) -> None:
    if not isinstance(name, str) or not TABLE_NAME.fullmatch(name):
        raise InvalidRequest(
            "name must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or "
            f"digit, got {name!r}"
        )


class TableRegistry:
    """Tables by name. Creation checks the table count and the memory budget before allocating."""

    def __init__(self, *, memory_budget_bytes: int, max_tables: int) -> None:
        self.memory_budget_bytes = memory_budget_bytes
        self.max_tables = max_tables
        self._tables: dict[str, EmbeddingTable] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._tables)

    def __iter__(self) -> Iterator[EmbeddingTable]:
        return iter(list(self._tables.values()))

    def get(self, name: str) -> EmbeddingTable:
        table = self._tables.get(name)
        if table is None:
            raise TableNotFound(name)
        return table

    @property
    def nbytes(self) -> int:
        return sum(table.nbytes for table in self)

    def create(
        self,
        name: str,
        num_embeddings: int,
        embedding_dim: int,
        *,
        dtype: str = "float32",
        init: InitSpec | None = None,
        seed: int | None = None,
        optimizer: dict[str, Any] | None = None,
        max_staleness: int | None = None,
    ) -> EmbeddingTable:
        """Make a new table; every argument is checked before anything is allocated."""
        check_table_name(name)
        for field, value in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise InvalidRequest(f"{field} must be a positive integer, got {value!r}")
        if dtype not in DTYPES:
            raise InvalidRequest(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if max_staleness is not None and max_staleness < 0:
            raise InvalidRequest(f"max_staleness must be >= 0, got {max_staleness!r}")
        rule = make_optimizer(optimizer or {"kind": "sgd"})
        shape = (num_embeddings, embedding_dim)
        itemsize = DTYPES[dtype].itemsize
        needed = shape[0] * shape[1] * itemsize + rule.state_bytes(shape, DTYPES[dtype])
        with self._lock:
            if name in self._tables:
                raise TableExists(name)
            self._reserve(name, needed)
            table = EmbeddingTable(
                name, num_embeddings, embedding_dim, rule, dtype=dtype, init=init, seed=seed,
                max_staleness=max_staleness,
            )
            table.pending_gradient.memory_check = functools.partial(self._check_growth, name)
            self._tables[name] = table
            return table

    def add(self, table: EmbeddingTable) -> None:
        """Register a table built elsewhere (restored from a snapshot), under the same limits."""
        with self._lock:
            if table.name in self._tables:
                raise TableExists(table.name)
            self._reserve(table.name, table.nbytes)
            table.pending_gradient.memory_check = functools.partial(self._check_growth, table.name)
            self._tables[table.name] = table

    def delete(self, name: str) -> None:
        with self._lock:
            if self._tables.pop(name, None) is None:
                raise TableNotFound(name)

    def _reserve(self, name: str, needed: int) -> None:
        """Refuse a new table that breaks the count limit or the budget. Caller holds the lock."""
        if len(self._tables) >= self.max_tables:
            raise BudgetExceeded(
                f"table {name!r} refused: the service already holds max_tables={self.max_tables}"
            )
        used = sum(table.nbytes for table in self._tables.values())
        if used + needed > self.memory_budget_bytes:
            raise BudgetExceeded(
                f"table {name!r} needs {needed} bytes (weights + optimizer state); "
                f"{used} of the memory budget of {self.memory_budget_bytes} bytes are in use"
            )


    def _check_growth(self, name: str, extra: int) -> None:
        """Called by a table (under its own lock, so not taking the registry's) before its
        pending gradient grows by `extra` bytes."""
        used = sum(table.nbytes for table in list(self._tables.values()))
        if used + extra > self.memory_budget_bytes:
            raise BudgetExceeded(
                f"push to table {name!r} refused: its pending gradient needs {extra} more bytes "
                f"and {used} of the memory budget of {self.memory_budget_bytes} bytes are in use "
                "(apply the pending gradient to free it)"
            )


def total_memory_bytes() -> int:
    """Physical memory of this machine, or the container's limit where one is set (cgroup v2
    memory.max or cgroup v1 memory.limit_in_bytes), whichever is smaller."""
    import os

    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as limit:
                value = limit.read().strip()
        except OSError:
            continue
        if value.isdigit():  # "max" (v2) means no limit; v1 says "no limit" with a huge number
            return min(int(value), physical)
    return physical


__all__ = ["TableRegistry", "check_table_name", "total_memory_bytes"]
