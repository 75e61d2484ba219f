"""The RowView of a dynamic table (service.core.rows): its live keys and their rows.

Neighbour search and the 2-D projection scan a table through a RowView; a dynamic table's live
rows are the keys its index holds. The scan lists the live keys once (ascending), then reads
them block by block, each block under the table's lock: a key evicted in between is skipped, a
row made in between is not visited (the scan sees the table as it was when it began, less what
left). Any int64 id may carry a label: labels are about ids and outlive eviction.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from service.core.errors import InvalidRequest
from service.core.rows import TableRows

if TYPE_CHECKING:
    from service.core.dynamic.table import DynamicTable


class KeyedRows(TableRows):
    table: DynamicTable

    def __init__(self, table: DynamicTable) -> None:
        super().__init__(table)

    def live_rows(self) -> int:
        return self.table.live_rows

    def blocks(
        self, block_rows: int, out: np.ndarray
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        keys = self.table.live_keys()  # (rows,) ascending
        for start in range(0, len(keys), block_rows):
            block = keys[start : start + block_rows]  # (b,)
            present, rows = self.table.rows_of(block)
            out[: len(rows)] = rows
            yield block[present], out[: len(rows)]  # (b',), (b', dim)

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        keys = self.table.keys_of(ids)  # (n,)
        present, rows = self.table.rows_of(keys)
        if not present.all():
            absent = int(keys[np.argmin(present)])
            raise InvalidRequest(f"id {absent} has no row in table {self.name!r} (a dynamic "
                                 "table holds rows for the keys it trained and kept)")
        return rows.reshape(*np.shape(ids), self.embedding_dim)


__all__ = ["KeyedRows"]
