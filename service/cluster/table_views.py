"""What a sharded table (service.cluster.table.ClusterTable) offers besides lookups and pushes:
its labels (kept by shard 0's server) as LabelStore's interface, and its RowView (service.core.
rows) for neighbour search and projections, read from the shards by lookups.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from service.cluster.runtime import result
from service.core import checks
from service.core.dynamic.table import keys_of
from service.core.errors import InvalidRequest
from service.core.rows import TableRows

if TYPE_CHECKING:
    from service.cluster.table import ClusterTable


class ClusterLabels:
    """The table's labels (kept by shard 0's server, keyed by table id), as LabelStore's
    interface: each call a Ray call."""

    def __init__(self, table: ClusterTable) -> None:
        self.table = table

    def _call(self, operation: str, *args: Any) -> Any:
        handle = self.table.registry.server(self.table.servers[0])
        return result(handle.labels.remote(operation, *args), timeout=120)

    def set(self, ids: np.ndarray, labels: Any, *, merge: bool = False,
            check_ids: Any = None) -> None:
        self._call("set", np.asarray(ids, dtype=np.int64), list(labels), merge)

    def items(self) -> tuple[np.ndarray, list[str]]:
        ids, labels = self._call("items")
        return np.asarray(ids, dtype=np.int64), labels

    def labels_of(self, ids: Any) -> list[str | None]:
        return list(self._call("labels_of", np.asarray(ids, dtype=np.int64)))

    def ids_of(self, labels: Any, field: str) -> np.ndarray:
        return np.asarray(self._call("ids_of", list(labels), field), dtype=np.int64)

    def __len__(self) -> int:
        return int(self._call("count")[0])

    @property
    def nbytes(self) -> int:
        return int(self._call("count")[1])


class ClusterRows(TableRows):
    """The RowView (service.core.rows) of a sharded table: blocks of ids in order, each read
    from the shards by one lookup (rows of different shards may be of different steps if
    training runs meanwhile)."""

    table: ClusterTable

    def __init__(self, table: ClusterTable) -> None:
        super().__init__(table)

    def live_rows(self) -> int:
        return self.table.num_embeddings or 0

    def blocks(self, block_rows: int, out: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        count = self.table.num_embeddings or 0
        for start in range(0, count, block_rows):
            ids = np.arange(start, min(start + block_rows, count), dtype=np.int64)  # (b,)
            rows, _ = self.table.lookup(ids)
            out[: len(ids)] = rows
            yield ids, out[: len(ids)]

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        rows, _ = self.table.lookup(ids)
        return rows


class KeyedClusterRows(ClusterRows):
    """The RowView of a sharded dynamic table: its live keys (every shard's, ascending) and
    their rows, read once (as service.core.dynamic.view.KeyedRows lists its keys once)."""

    def live_rows(self) -> int:
        return self.table.live_rows

    def blocks(self, block_rows: int, out: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        keys, rows, _ = self.table.export_rows()  # (n,), (n, dim)
        for start in range(0, len(keys), block_rows):
            block = rows[start : start + block_rows]
            out[: len(block)] = block
            yield keys[start : start + block_rows], out[: len(block)]

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        keys = keys_of(ids)
        live, _, _ = self.table.export_rows()
        present = np.isin(keys, live)
        if not present.all():
            absent = int(keys[np.argmin(present)])
            raise InvalidRequest(f"id {absent} has no row in table {self.name!r} (a dynamic "
                                 "table holds rows for the keys it trained and kept)")
        rows, _ = self.table.lookup(keys)
        return rows.reshape(*np.shape(ids), self.embedding_dim)

    def check_label_ids(self, ids: np.ndarray) -> None:
        checks.check_id_kind(ids)
