"""The numeric core: tables, scatter-add and optimizers in plain numpy (no web framework here)."""

from service.core.errors import (
    BudgetExceeded,
    EmbeddingServiceError,
    InvalidRequest,
    SnapshotDamaged,
    StaleGradient,
    StorageError,
    TableExists,
    TableNotFound,
)
from service.core.initializers import InitSpec
from service.core.optimizers import OPTIMIZERS, Optimizer, make_optimizer
from service.core.registry import TableRegistry
from service.core.scatter import sum_duplicate_rows
from service.core.snapshot_store import SnapshotStore
from service.core.snapshots import read_table, write_table
from service.core.table import ApplyResult, EmbeddingTable, PushResult

__all__ = [
    "OPTIMIZERS",
    "ApplyResult",
    "BudgetExceeded",
    "EmbeddingServiceError",
    "EmbeddingTable",
    "InitSpec",
    "InvalidRequest",
    "Optimizer",
    "PushResult",
    "SnapshotDamaged",
    "SnapshotStore",
    "StaleGradient",
    "StorageError",
    "TableExists",
    "TableNotFound",
    "TableRegistry",
    "make_optimizer",
    "read_table",
    "sum_duplicate_rows",
    "write_table",
]
