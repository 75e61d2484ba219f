"""The named tables of one service, with the limits on how many and how large.

A new table is allocated and filled outside the registry's lock, which a large table would
otherwise hold for seconds (every delete, create and budget check waiting behind it): its name
and bytes are reserved under the lock, the table is built, then published under the lock. The
memory budget counts tables, tables being built, and any other holder of memory the service
registers (`add_memory_holder`: the API's idempotency store).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any, Protocol

from service.core.budget import MemoryBudget
from service.core.dynamic.spec import DynamicSpec, check_spec
from service.core.dynamic.table import DynamicTable
from service.core.errors import BudgetExceeded, InvalidRequest, TableExists, TableNotFound
from service.core.initializers import InitSpec, check_init
from service.core.optimizers import Optimizer, make_optimizer
from service.core.table import DTYPES, EmbeddingTable
from service.core.table_base import Table

TABLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


def check_table_name(name: str) -> None:
    if not isinstance(name, str) or not TABLE_NAME.fullmatch(name):
        raise InvalidRequest(
            "name must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or "
            f"digit, got {name!r}"
        )


def check_table_settings(num_embeddings: int | None, embedding_dim: int, dtype: str,
                         init: InitSpec | None, optimizer: dict[str, Any] | None,
                         max_staleness: int | None,
                         dynamic: DynamicSpec | dict[str, Any] | None) -> Optimizer:
    """Check a new table's settings (all but its name) before anything is made, the same in
    a single-process registry and cluster mode's; the table's optimizer rule."""
    if (num_embeddings is None) == (dynamic is None):
        raise InvalidRequest(
            "give either num_embeddings (a table of ids 0..num_embeddings-1) or dynamic "
            "(any 64-bit id, rows made on first use), not "
            + ("both" if dynamic is not None else "neither"))
    sizes = [("embedding_dim", embedding_dim)]
    if num_embeddings is not None:
        sizes.insert(0, ("num_embeddings", num_embeddings))
    for field, value in sizes:
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise InvalidRequest(f"{field} must be a positive integer, got {value!r}")
    if dtype not in DTYPES:
        raise InvalidRequest(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if max_staleness is not None and max_staleness < 0:
        raise InvalidRequest(f"max_staleness must be >= 0, got {max_staleness!r}")
    check_init(init or InitSpec(), DTYPES[dtype])
    return make_optimizer(optimizer or {"kind": "sgd"})


class MemoryHolder(Protocol):
    """Anything holding memory that counts against the budget besides the tables."""

    @property
    def nbytes(self) -> int: ...


class TableRegistry:
    """Tables by name. Creation checks the table count and the memory budget before allocating."""

    def __init__(self, *, memory_budget_bytes: int, max_tables: int) -> None:
        self.memory_budget_bytes = memory_budget_bytes
        self.max_tables = max_tables
        self._tables: dict[str, Table] = {}
        self._building: dict[str, int] = {}  # tables being allocated: name -> bytes reserved
        self._holders: list[MemoryHolder] = []
        self._lock = threading.Lock()
        # what every table's pending gradient and labels check before growing (passed to each
        # table when it is made: create(), and read_table for restored ones)
        self.budget = MemoryBudget(memory_budget_bytes, lambda: self.memory_used_bytes)

    def __len__(self) -> int:
        return len(self._tables)

    def __iter__(self) -> Iterator[Table]:
        return iter(list(self._tables.values()))

    def get(self, name: str) -> Table:
        table = self._tables.get(name)
        if table is None:
            raise TableNotFound(name)
        return table

    @property
    def nbytes(self) -> int:
        """Bytes held by the tables."""
        return sum(table.nbytes for table in self)

    @property
    def memory_used_bytes(self) -> int:
        """Everything counted against the budget: tables, tables being allocated, and other
        holders. Reads snapshots of the containers: safe without the lock."""
        building = sum(list(self._building.values()))
        return self.nbytes + building + sum(holder.nbytes for holder in list(self._holders))

    def add_memory_holder(self, holder: MemoryHolder) -> None:
        """Count holder.nbytes, read at every check, against the memory budget."""
        with self._lock:
            self._holders.append(holder)

    def create(
        self,
        name: str,
        num_embeddings: int | None,
        embedding_dim: int,
        *,
        dtype: str = "float32",
        init: InitSpec | None = None,
        seed: int | None = None,
        optimizer: dict[str, Any] | None = None,
        max_staleness: int | None = None,
        dynamic: DynamicSpec | dict[str, Any] | None = None,
        shards: int | None = None,
    ) -> Table:
        """Make a new table: a fixed one of num_embeddings rows, or with `dynamic` settings
        (and num_embeddings None) a dynamic one (service.core.dynamic). Every argument is
        checked before anything is allocated. A table of this registry is in one piece
        (`shards` 1 or None): cluster mode shards tables."""
        check_table_name(name)
        if shards is not None and shards != 1:
            raise InvalidRequest(
                f"shards must be 1 here: a single-process service holds a table in one piece "
                f"(EMBED_CLUSTER=ray spreads tables over shard servers), got {shards}")
        rule = check_table_settings(num_embeddings, embedding_dim, dtype, init, optimizer,
                                    max_staleness, dynamic)
        if dynamic is not None:
            return self._create_dynamic(name, embedding_dim, rule, check_spec(dynamic), dtype,
                                        init, seed, max_staleness)
        assert num_embeddings is not None
        shape = (num_embeddings, embedding_dim)
        itemsize = DTYPES[dtype].itemsize
        needed = shape[0] * shape[1] * itemsize + rule.state_bytes(shape, DTYPES[dtype])
        with self._lock:  # reserve the name and the bytes
            self._check_room(name, needed)
            self._building[name] = needed
        try:  # allocate and fill: seconds for a large table, so not under the lock
            table = EmbeddingTable(
                name, num_embeddings, embedding_dim, rule, dtype=dtype, init=init, seed=seed,
                max_staleness=max_staleness, budget=self.budget,
            )
        except BaseException:
            with self._lock:
                del self._building[name]
            raise
        with self._lock:  # publish
            del self._building[name]
            self._tables[name] = table
        return table

    def _create_dynamic(self, name: str, embedding_dim: int, rule: Optimizer,
                        settings: DynamicSpec, dtype: str, init: InitSpec | None,
                        seed: int | None, max_staleness: int | None) -> Table:
        """A dynamic table starts with no rows (each asks the budget as it grows); its kernels
        may still be compiling at start-up, so it is made outside the lock."""
        table = DynamicTable(name, embedding_dim, rule, settings=settings, dtype=dtype,
                             init=init, seed=seed, max_staleness=max_staleness,
                             budget=self.budget)
        with self._lock:
            self._check_room(name, table.nbytes)
            self._tables[name] = table
        return table

    def add(self, table: Table) -> None:
        """Register a table built elsewhere (restored from a snapshot), under the same limits.
        It must have been made with budget=self.budget."""
        if table.budget is not self.budget:
            raise ValueError(f"table {table.name!r} was not made with this registry's budget")
        with self._lock:
            self._check_room(table.name, table.nbytes)
            self._tables[table.name] = table

    def shard_map(self, name: str) -> dict[str, Any]:
        """Where table `name`'s rows are served: here, every one (no shard servers)."""
        self.get(name)
        return {"generation": "", "version": "", "urls": []}

    def delete(self, name: str) -> None:
        with self._lock:
            if self._tables.pop(name, None) is None:
                raise TableNotFound(name)

    def _check_room(self, name: str, needed: int) -> None:
        """Refuse a new table whose name is taken (or being created), or that breaks the count
        limit or the budget. Caller holds the lock."""
        if name in self._tables or name in self._building:
            raise TableExists(name)
        if len(self._tables) + len(self._building) >= self.max_tables:
            raise BudgetExceeded(
                f"table {name!r} refused: the service already holds max_tables={self.max_tables}"
            )
        used = self.memory_used_bytes
        if used + needed > self.memory_budget_bytes:
            raise BudgetExceeded(
                f"table {name!r} needs {needed} bytes (weights + optimizer state); "
                f"{used} of the memory budget of {self.memory_budget_bytes} bytes are in use"
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


__all__ = ["MemoryHolder", "TableRegistry", "check_table_name", "total_memory_bytes"]
