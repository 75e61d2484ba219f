"""The memory budget a table's pending gradient, labels and dynamic rows check before they grow.

Weights and optimizer state of a fixed table are counted when it is made (service.core.registry);
a pending gradient grows push by push, labels with every PUT, and a dynamic table's rows, key
index, eviction bookkeeping and admission counts as keys arrive, so they ask the budget first. The
registry makes one MemoryBudget for all its tables and passes it to each table it creates or
restores; a table made alone (budget=None) has no limit.
"""

from __future__ import annotations

from collections.abc import Callable

from service.core.errors import BudgetExceeded


class MemoryBudget:
    """`limit_bytes` for everything `used()` counts (the registry's memory_used_bytes: tables,
    tables being built, other holders)."""

    def __init__(self, limit_bytes: int, used: Callable[[], int]) -> None:
        self.limit_bytes = limit_bytes
        self.used = used

    def _check(self, extra: int, refused: str, after: str = "") -> None:
        """BudgetExceeded ("<refused>: ... bytes are in use<after>") unless `extra` more bytes
        fit."""
        used = self.used()
        if used + extra > self.limit_bytes:
            raise BudgetExceeded(f"{refused} {extra} more bytes and {used} of the memory budget "
                                 f"of {self.limit_bytes} bytes are in use{after}")

    def check_labels(self, table: str, extra: int) -> None:
        """BudgetExceeded unless the labels of `table` may grow by about `extra` bytes."""
        self._check(extra, f"labels of table {table!r} refused: they need about")

    def check_growth(self, table: str, extra: int) -> None:
        """BudgetExceeded unless the pending gradient of `table` may grow by `extra` bytes.
        Called under the table's lock, never the registry's."""
        self._check(extra, f"push to table {table!r} refused: its pending gradient needs",
                    " (apply the pending gradient to free it)")

    def check_dynamic(self, table: str, extra: int, what: str) -> None:
        """BudgetExceeded unless dynamic table `table` may grow by `extra` bytes for `what`
        ("3 new rows", "5 admission candidates"). Called under the table's lock."""
        self._check(extra, f"table {table!r} refused {what}: they need",
                    " (set dynamic.capacity, or a ttl, to bound the table's rows)")
