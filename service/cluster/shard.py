"""One shard of a cluster-mode table: the rows whose id hashes to it, on the core's own table.

A shard holds its rows in a core EmbeddingTable (service.core.table) as rows 0..n_k-1, in id
order, and a key index (service.core.dynamic.KeyIndex) from table id to that row: the core's
lookup, push, pending gradient, optimizer steps, snapshots and labels, unchanged, with the ids
translated at the door. Around them it keeps what only a shard needs:

- the pushes it counts since the last apply (each push is counted by shard 0 only, so the
  table's count is the sum: an apply with average=True divides by it);
- its idempotency journal (service.cluster.journal), written under the shard's lock with the
  push's effect;
- the steps being decided: the leader (service.cluster.leader) numbers every step of the table
  and has each shard take it in two phases: `seal` (or `prepare_push`) sets the step's rows and
  gradient aside and checks that every new value would be finite, then `commit` writes them (or
  `abort` puts the gradient back). A step one shard refuses changes no shard
  (service.cluster.shard_steps, a part of ShardTable).

Locks: the shard's own lock, then the core table's; never the other way round.

    shard = ShardTable.fresh(spec, place, journal)     # its rows of the table's initial matrix
    rows, step = shard.lookup(np.array([5, 17]))       # ids must be this shard's
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from service.cluster.journal import Journal
from service.cluster.placement import BLOCK_ROWS, Place, TableSpec, own_ids
from service.cluster.shard_steps import Prepared, ShardSteps
from service.core import checks, kernels
from service.core.budget import MemoryBudget
from service.core.dynamic import KeyIndex
from service.core.errors import BudgetExceeded, InvalidRequest, ShardMapChanged
from service.core.initializers import check_init, initial_weight_blocks
from service.core.optimizers import make_optimizer
from service.core.pending import check_finite_sums
from service.core.sharded_snapshots import Part, part_files
from service.core.snapshots import TableWrite, WrittenTable
from service.core.table import DTYPES, EmbeddingTable


class ShardTable(ShardSteps):
    """The rows of one shard, addressed by table id. Thread-safe."""

    def __init__(self, spec: TableSpec, place: Place, table: EmbeddingTable, ids: np.ndarray,
                 pushes: int, journal: Journal) -> None:
        self.spec = spec
        self.place = place
        self.table = table
        self.index = KeyIndex()
        self.index.insert(ids)  # ascending ids get rows 0, 1, 2...: the core table's rows
        self.pushes = pushes  # pushes since the last apply this shard counted
        self.journal = journal
        self.prepared: dict[str, Prepared] = {}
        self._lock = threading.Lock()
        self._write: TableWrite | None = None
        self._extra: dict[str, bytes] = {}
        self._staged: tuple[str, np.ndarray] | None = None

    # -- making one ---------------------------------------------------------------------------
    @classmethod
    def fresh(cls, spec: TableSpec, place: Place, journal: Journal,
              budget: MemoryBudget | None = None) -> ShardTable:
        """The shard's rows of a new table: the initial matrix of the whole table is drawn
        block by block, as a single-process service draws it in one piece, and each block's
        rows of this shard are kept (every shard draws the whole stream: its cost is the
        table's, its memory one block)."""
        dtype = DTYPES[spec.dtype]
        init = spec.init_spec()
        check_init(init, dtype)
        optimizer = make_optimizer(spec.optimizer or {"kind": "sgd"})
        assert spec.num_embeddings is not None, "a fixed table's spec"
        ids = own_ids(spec.num_embeddings, place)
        shape = (len(ids), spec.embedding_dim)
        needed = shape[0] * shape[1] * dtype.itemsize + optimizer.state_bytes(shape, dtype)
        if budget is not None and needed > budget.limit_bytes - budget.used():
            raise BudgetExceeded(
                f"table {spec.name!r} refused: shard {place.shard} of {place.shards} needs "
                f"{needed} bytes (weights + optimizer state) and its server's memory budget "
                f"is {budget.limit_bytes} bytes ({budget.used()} in use)")
        weights = np.empty(shape, dtype=dtype)
        filled = 0
        for start, block in initial_weight_blocks((spec.num_embeddings, spec.embedding_dim),
                                                  dtype, init, spec.seed, BLOCK_ROWS):
            mine = ids[(ids >= start) & (ids < start + len(block))] - start  # (m,)
            weights[filled : filled + len(mine)] = block[mine]
            filled += len(mine)
        table = EmbeddingTable(spec.name, len(ids), spec.embedding_dim, optimizer,
                               dtype=spec.dtype, init=init, seed=spec.seed,
                               max_staleness=spec.max_staleness, weights=weights, budget=budget)
        return cls(spec, place, table, ids, 0, journal)

    @classmethod
    def of_part(cls, spec: TableSpec, place: Place, part: Part, journal: Journal) -> ShardTable:
        """The shard restored from its part of a snapshot (service.core.sharded_snapshots)."""
        if part.journal is not None:
            journal.load_json(part.journal)
        assert isinstance(part.table, EmbeddingTable)
        return cls(spec, place, part.table, part.ids, part.pushes, journal)

    # -- what the API layer reads -----------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.table.dtype

    @property
    def embedding_dim(self) -> int:
        return self.table.embedding_dim

    @property
    def num_embeddings(self) -> int | None:
        return self.spec.num_embeddings

    @property
    def ids_are_keys(self) -> bool:
        return self.spec.dynamic is not None

    @property
    def capacity(self) -> int | None:
        """The whole table's capacity (a dynamic table's), which its leader keeps."""
        return None

    @property
    def step(self) -> int:
        return self.table.step

    @property
    def rows(self) -> int:
        return self.table.num_embeddings

    @property
    def nbytes(self) -> int:
        return self.table.nbytes + self.index.nbytes + self.journal.nbytes

    @property
    def ids(self) -> np.ndarray:
        """(n_k,) the table id of each of the shard's rows (ascending)."""
        return self.index.slot_keys

    def stats(self) -> dict[str, Any]:
        """What the leader, the fronts and /metrics read of the shard."""
        with self._lock:
            prepared = [[txn, held.step] for txn, held in self.prepared.items()]
        return {"step": self.table.step, "pending_rows": self.table.pending_rows,
                "rows": self.rows, "nbytes": self.nbytes, "labels": len(self.table.labels),
                "changes": self.table.changes, "journal_keys": len(self.journal),
                "prepared": prepared}

    def check_ids(self, ids: np.ndarray) -> None:
        """Integer ids in [0, num_embeddings) of the whole table."""
        assert self.spec.num_embeddings is not None
        checks.check_ids(ids, self.spec.num_embeddings, self.spec.name)

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """(n,) the shard's row of each id; ShardMapChanged if one is not this shard's."""
        self.check_ids(ids)
        rows = self.index.lookup(ids)  # (n,) flattened
        if len(rows) and rows.min() < 0:
            stray = int(np.asarray(ids).reshape(-1)[np.argmin(rows)])
            raise ShardMapChanged(
                f"id {stray} of table {self.name!r} is not held by shard {self.place.shard} "
                f"of {self.place.shards}")
        return rows

    # -- reads and pushes -----------------------------------------------------------------------
    def lookup(self, ids: np.ndarray, out: np.ndarray | None = None, *,
               wait: bool = True) -> tuple[np.ndarray, int]:
        """W[ids] of this shard's ids, shaped ids.shape + (dim,), and the step read at."""
        rows = self.rows_of(ids).reshape(np.shape(ids))
        return self.table.lookup(rows, out, wait=wait)

    def push(self, ids: np.ndarray, grads: np.ndarray, *, counted: bool, step: int | None,
             wait: bool = True) -> dict[str, int]:
        """Add this shard's part of a push into its pending gradient (duplicates sum in
        order, as np.add.at); the reply's fields of the part. Under the shard's lock; the
        caller records the key in the journal inside `locked()` (see worker_app)."""
        rows = self.rows_of(ids)
        flat_grads = np.asarray(grads).reshape(len(rows), self.embedding_dim)  # (n, dim)
        if flat_grads.dtype.kind == "f" and len(flat_grads) and not np.isfinite(
                flat_grads).all():
            raise InvalidRequest("grads must be finite, got NaN or infinity")
        try:
            result = self.table.push(rows, flat_grads, step=step, wait=wait)
        except InvalidRequest as error:
            self._name_the_row(rows, flat_grads, error)
            raise
        if counted:
            self.pushes += 1
        return {"rows": int(rows.size), "pending_rows": result.pending_rows,
                "step": result.step, "rows_updated": 0}

    def _name_the_row(self, rows: np.ndarray, grads: np.ndarray, error: InvalidRequest) -> None:
        """The core names a row whose summed gradient would overflow by its number in this
        shard: if that is what happened, raise the same refusal naming its table id instead
        (the sums recomputed bit for bit as the core computed them; grads are finite here)."""
        pending_rows, pending_sums, _ = self.table.pending()
        slot_of_row = {int(row): slot for slot, row in enumerate(pending_rows)}
        distinct, slot_of_id = kernels.sorted_distinct(kernels.c_array(rows, np.int64))
        sums = np.zeros((len(distinct), self.embedding_dim), dtype=self.dtype)  # (k, dim)
        for i, row in enumerate(distinct.tolist()):
            if row in slot_of_row:
                sums[i] = pending_sums[slot_of_row[row]]
        kernels.scatter_add(sums, slot_of_id, kernels.c_array(grads, self.dtype), False)
        check_finite_sums(self.ids[distinct], sums, grads)  # raises if it overflowed

    def locked(self, wait: bool = True) -> _Held:
        """`with shard.locked(wait):` the shard's lock (TableBusy at once if wait=False and
        another holds it): a push and its journal entry are one instant for snapshots."""
        return _Held(self._lock, wait, self.name)

    # -- eviction by capacity (a dynamic table's: service.cluster.dynamic_shard) -------------
    def eviction_candidates(self, count: int) -> dict[str, list[int]]:
        return {"values": [], "keys": []}  # a fixed table keeps every row

    def evict_keys(self, keys: np.ndarray) -> int:
        return 0

    # -- importing weights ----------------------------------------------------------------
    def stage_weights(self, token: str, ids: np.ndarray, rows: np.ndarray) -> None:
        """Hold this shard's rows of an imported matrix (ids (n_k,), rows (n_k, dim)) until
        the leader swaps them in (swap_weights): every shard at once, between two steps."""
        order = self.rows_of(ids)  # the shard's row of each id
        if len(order) != self.rows or len(np.unique(order)) != self.rows:
            raise InvalidRequest(f"weights for shard {self.place.shard} of table {self.name!r} "
                                 f"must hold each of its {self.rows} rows once")
        weights = np.empty((self.rows, self.embedding_dim), dtype=self.dtype)
        weights[order] = rows
        with self._lock:
            self._staged = (token, weights)

    def swap_weights(self, token: str) -> int:
        """Make the staged rows the weights (pending gradient dropped, optimizer state and step
        kept, as the single-process import); the pending rows dropped."""
        with self._lock:
            staged, self._staged = self._staged, None
            if staged is None or staged[0] != token:
                raise InvalidRequest(f"no weights staged for import {token!r} on shard "
                                     f"{self.place.shard} of table {self.name!r}")
            self.pushes = 0
            return self.table.replace_weights(staged[1])

    # -- snapshots ------------------------------------------------------------------------------
    def snapshot_begin(self, directory: Path) -> None:
        """Stream the rows into `directory` (the table keeps training meanwhile)."""
        self._write = TableWrite(self.table, directory)

    def snapshot_capture(self) -> int:
        """The snapshot's instant (the leader holds every step back meanwhile): the rows,
        pending gradient, counted pushes and journal as of now. Returns the step."""
        assert self._write is not None, "snapshot_begin first"
        with self._lock:
            point = self._write.capture()
            self._extra = part_files(self.ids, self.place.shard, self.place.shards,
                                     self.pushes, self.journal.to_json())
            return point.step

    def snapshot_complete(self) -> WrittenTable:
        write, self._write = self._write, None
        assert write is not None, "snapshot_begin first"
        return write.complete(self._extra)

    def snapshot_cancel(self) -> None:
        if self._write is not None:
            self._write.cancel()
            self._write = None


class _Held:
    """The shard lock held for a with-block (core.locking's idiom, for the shard's lock)."""

    __slots__ = ("_lock",)

    def __init__(self, lock: threading.Lock, wait: bool, name: str) -> None:
        from service.core.locking import TableBusy

        if not lock.acquire(blocking=wait):
            raise TableBusy(name)
        self._lock = lock

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()
