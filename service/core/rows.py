"""What neighbour search and labels need of a table: its live ids and their rows, block by block.

Neighbour search (service.core.neighbors) never touches a table's arrays directly: it goes
through a RowView, so a dense table (ids 0..n-1, every row live) and a dynamic one (any int64
key, rows made on first use, evicted later) are searched by the same code. A view provides

- `embedding_dim` and `dtype` of the rows, `name` for messages;
- `live_rows()`: how many rows a scan would visit now;
- `blocks(block_rows, out)`: every live row once, as (ids (b,) int64, rows (b, dim)) pairs of at
  most block_rows rows, each block read atomically with respect to training (under the table's
  lock); `rows` may be `out[:b]`, valid until the next block is asked for;
- `rows_of(ids)`: the rows of given ids (a query's own items), InvalidRequest naming an id that
  is not live;
- `check_label_ids(ids)`: InvalidRequest unless every id may carry a label.

DenseRows is the view of an EmbeddingTable; the dynamic table provides its own (its key index
lists the live keys and their slots).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from service.core.table import EmbeddingTable


class RowView(Protocol):
    name: str

    @property
    def embedding_dim(self) -> int: ...

    @property
    def dtype(self) -> np.dtype[Any]: ...

    def live_rows(self) -> int: ...

    def blocks(
        self, block_rows: int, out: np.ndarray
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...

    def rows_of(self, ids: np.ndarray) -> np.ndarray: ...

    def check_label_ids(self, ids: np.ndarray) -> None: ...


class RowSource(Protocol):
    """What TableRows reads of a table: a core Table has it (service.core.table_base), and so
    has cluster mode's sharded table."""

    @property
    def name(self) -> str: ...

    @property
    def embedding_dim(self) -> int: ...

    @property
    def dtype(self) -> np.dtype[Any]: ...

    def check_ids(self, ids: np.ndarray) -> None: ...


class TableRows:
    """What every table's RowView reads the same way: its name, dimension and dtype."""

    def __init__(self, table: RowSource) -> None:
        self.table = table
        self.name = table.name

    @property
    def embedding_dim(self) -> int:
        return self.table.embedding_dim

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.table.dtype

    def check_label_ids(self, ids: np.ndarray) -> None:
        self.table.check_ids(ids)


class DenseRows(TableRows):
    """The RowView of a dense table: ids 0..num_embeddings-1, each block copied under the
    table's lock (table.copy_rows), so a block never holds a half-applied update."""

    table: EmbeddingTable

    def __init__(self, table: EmbeddingTable) -> None:
        super().__init__(table)

    def live_rows(self) -> int:
        return self.table.num_embeddings

    def blocks(
        self, block_rows: int, out: np.ndarray
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        count = self.table.num_embeddings
        for start in range(0, count, block_rows):
            stop = min(start + block_rows, count)
            self.table.copy_rows(start, stop, out)
            yield np.arange(start, stop, dtype=np.int64), out[: stop - start]  # (b,), (b, dim)

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        rows, _ = self.table.lookup(ids)  # (n, dim); InvalidRequest names an id out of range
        return rows



def row_view(table: Any) -> RowView:
    """The view of any table the registry holds: its own `row_view()` if it has one (dynamic
    tables), else DenseRows."""
    own = getattr(table, "row_view", None)
    return own() if callable(own) else DenseRows(table)


__all__ = ["DenseRows", "RowView", "TableRows", "row_view"]
