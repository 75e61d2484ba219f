"""What every table shares, whatever holds its rows: the lock, the pending gradient, the
staleness checks, the optimizer step, change counting, labels and the common TableInfo fields.

Two kinds of table build on it:

- EmbeddingTable (service.core.table): a fixed (num_embeddings, dim) matrix, ids 0..n-1;
- DynamicTable (service.core.dynamic.table): any 64-bit key, a row made on first use, admission
  and eviction.

The three operations of an embedding layer, for many concurrent callers:

- lookup(ids)        forward:  W[ids]                          (each kind its own)
- push(ids, grads)   backward: np.add.at(G, ids, grads), summed across pushes until the next apply
- apply()            step:     the optimizer updates every row with a pending gradient; G cleared

push and apply are written once, here. What differs between the kinds is behind four hooks:

- `_push_keys(ids)`: a push's ids as flat int64 keys, checked (fixed: in range; dynamic: any);
- `_check_rows(rows)`: the distinct sorted keys of a push (fixed: the range, from the sort);
- `_admit(rows)` / `_record_admission(rows, kept)`: which keys keep their gradient (dynamic
  tables' admission; fixed tables keep every one), asked under the lock and recorded once the
  push is accepted;
- `_step_rows(rows, sums, lr, step)`: the optimizer step on those keys' rows (fixed: rows are
  indices; dynamic: rows are made first, then evicted after the step).

One lock per table, taken one way (`with self._locked(wait):`, service.core.locking) makes
every operation atomic; a push's sorting and summing run before taking it. An update that
would make a weight or state value inf or NaN is refused whole (InvalidRequest naming the
table, row and array). Every change is counted in the ChangeTracker that snapshots read.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from service.core import checks, kernels
from service.core.budget import MemoryBudget
from service.core.errors import InvalidRequest
from service.core.initializers import InitSpec
from service.core.labels import LabelStore
from service.core.locking import TableLock
from service.core.optimizers import Optimizer
from service.core.pending import PendingGradient, check_finite_sums
from service.core.snapshot_changes import ChangeTracker

DTYPES: dict[str, np.dtype[Any]] = {name: np.dtype(name) for name in ("float32", "float64")}


@dataclass(frozen=True)
class PushResult:
    rows: int  # id entries pushed (duplicates counted)
    pending_rows: int  # distinct rows awaiting apply
    step: int
    rows_updated: int = 0  # rows the optimizer updated (asynchronous pushes only)
    dropped_rows: int | None = None  # id entries whose key was not admitted (dynamic tables)


@dataclass(frozen=True)
class ApplyResult:
    step: int
    rows_updated: int


@dataclass(frozen=True)
class SealedGradient:
    """A pending gradient taken out of its table by seal_pending: rows (k,) in order of first
    push, their summed gradients (k, dim), and the pushes they came from."""

    rows: np.ndarray
    sums: np.ndarray
    pushes: int


class Table:
    """The shared part of a table (see the module docstring). Thread-safe."""

    # False: ids are row numbers 0..num_embeddings-1; True: ids are keys, any 64-bit integer
    # (JSON ids in [-2**63, 2**64), uint64 the same bits): what a request's ids are parsed as
    ids_are_keys: ClassVar[bool] = False

    def __init__(
        self,
        name: str,
        embedding_dim: int,
        optimizer: Optimizer,
        *,
        dtype: str = "float32",
        init: InitSpec | None = None,
        seed: int | None = None,
        max_staleness: int | None = None,
        budget: MemoryBudget | None = None,
    ) -> None:
        self.name = name
        self.embedding_dim = embedding_dim
        self.dtype = DTYPES[dtype]
        self.optimizer = optimizer
        self.init = init or InitSpec()
        self.seed = seed
        self.max_staleness = max_staleness
        self.step = 0
        self.tracker = ChangeTracker()
        self.pending_gradient = PendingGradient(name, embedding_dim, self.dtype, budget)
        label_check = None if budget is None else functools.partial(budget.check_labels, name)
        self.labels = LabelStore(self._note_labels_change, label_check)  # service.core.labels
        self._lock = TableLock(name)

    # -- what the kinds provide ------------------------------------------------------------
    def _push_keys(self, ids: np.ndarray) -> np.ndarray:
        """(n,) the push's ids as C-contiguous int64 keys; InvalidRequest names a bad one."""
        raise NotImplementedError

    def check_ids(self, ids: np.ndarray) -> None:
        """InvalidRequest unless `ids` may name rows of this table (labels check them too)."""
        raise NotImplementedError

    def lookup(
        self, ids: np.ndarray, out: np.ndarray | None = None, *, wait: bool = True
    ) -> tuple[np.ndarray, int]:
        """The rows of ids, shape ids.shape + (embedding_dim,), and the step they were read
        at; `out` receives them if given. wait=False: TableBusy instead of waiting."""
        raise NotImplementedError

    def _check_rows(self, rows: np.ndarray) -> None:
        """The push's distinct keys, sorted: InvalidRequest if the table refuses them."""

    def _admit(self, rows: np.ndarray) -> np.ndarray | None:
        """Under the lock, before anything changes: (k,) bool, which of the distinct keys keep
        their gradient (None: all of them). May raise (nothing changed)."""
        return None

    def _record_admission(self, rows: np.ndarray, kept: np.ndarray | None) -> None:
        """Under the lock, once the push is accepted: count it for admission."""

    def _step_rows(self, rows: np.ndarray, sums: np.ndarray, lr: float, step: int) -> None:
        """Under the lock: one optimizer step of the rows of keys `rows` (k,) with gradient
        `sums` (k, dim); `step` counts this step. InvalidRequest with nothing changed."""
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------
    @property
    def budget(self) -> MemoryBudget | None:
        return self.pending_gradient.budget

    @property
    def changes(self) -> int:
        """Changes since creation (or restore): snapshots skip tables whose count is unchanged."""
        return self.tracker.changes

    @property
    def pending_rows(self) -> int:
        return self.pending_gradient.count

    @property
    def pending_nbytes(self) -> int:
        """Bytes held by the pending gradient: grows with the rows pushed, not the table size."""
        return self.pending_gradient.nbytes

    def info(self) -> dict[str, Any]:
        """TableInfo's fields every kind has (each kind adds its own)."""
        return {
            "name": self.name,
            "embedding_dim": self.embedding_dim,
            "dtype": self.dtype.name,
            "init": self.init.as_dict(),
            "seed": self.seed,
            "optimizer": self.optimizer.config(),
            "max_staleness": self.max_staleness,
            "step": self.step,
            "pending_rows": self.pending_gradient.count,
            "labels": len(self.labels),
            "nbytes": self.nbytes,
            "shards": 1,  # a table of one process is in one piece (cluster mode: service.cluster)
        }

    def push(
        self,
        ids: np.ndarray,
        grads: np.ndarray,
        *,
        apply: bool = False,
        step: int | None = None,
        wait: bool = True,
    ) -> PushResult:
        """Add grads into the pending gradient of rows ids (duplicates sum, as np.add.at).
        With apply=True the pushed rows are updated by the optimizer at once instead, as one
        step. `step` is the table step the gradient was computed at (staleness check).
        wait=False raises TableBusy, with nothing changed, instead of waiting for the lock."""
        flat_ids = self._push_keys(ids)  # (n,)
        rows, slot_of_id = kernels.sorted_distinct(flat_ids)  # (k,) sorted, (n,)
        self._check_rows(rows)
        dim = self.embedding_dim
        checks.check_grads(ids, grads, dim)
        checks.check_step(step)
        # (n, dim); a float64 beyond float32 becomes inf, refused as such by the sums' check
        flat_grads = kernels.c_array(grads.reshape(-1, dim), self.dtype)
        sums = None
        if apply:  # one step of the summed gradient; a non-finite sum makes the step refuse
            sums = np.zeros((len(rows), dim), dtype=self.dtype)  # (k, dim)
            kernels.scatter_add(sums, slot_of_id, flat_grads, len(rows) == len(flat_ids))
        # else the additions into the pending sums happen under the lock, in push order
        with self._locked(wait):
            checks.check_staleness(step, self.step, self.max_staleness, self.name)
            pending = self.pending_gradient
            kept = self._admit(rows)
            dropped = None if kept is None else 0
            all_rows = rows
            if kept is not None and not kept.all():
                keep_id = kept[slot_of_id]  # (n,) the id entries whose key is admitted
                dropped = len(flat_ids) - int(keep_id.sum())
                if not np.isfinite(flat_grads[~keep_id]).all():  # bad input though dropped
                    raise InvalidRequest("grads must be finite, got NaN or infinity")
                new_slot = np.cumsum(kept) - 1  # (k,) each kept key's place among them
                rows, slot_of_id = rows[kept], new_slot[slot_of_id[keep_id]]
                flat_grads = flat_grads[keep_id]
                sums = None if sums is None else sums[kept]
            if sums is None:  # (a push whose keys were all dropped still counts as a push)
                pending.add(rows, slot_of_id, flat_grads)
                self._record_admission(all_rows, kept)
                self.tracker.note(None)
                return PushResult(ids.size, pending.count, self.step, 0, dropped)
            if len(rows) == 0:  # an empty step changes nothing, as apply() with nothing
                if len(all_rows):
                    self._record_admission(all_rows, kept)
                    self.tracker.note(None)
                return PushResult(ids.size, pending.count, self.step, 0, dropped)
            self._update(rows, sums, self.optimizer.lr, flat_grads)
            self._record_admission(all_rows, kept)
            return PushResult(ids.size, pending.count, self.step, len(rows), dropped)

    def apply(self, lr: float | None = None, average: bool = False) -> ApplyResult:
        """One optimizer step over every row with a pending gradient, then clear it. With
        average=True each row's gradient is divided by the number of pushes since the last
        apply. Nothing pending: nothing changes (the step does not advance). A refused update
        (a new value not finite, or rows that would not fit in the memory budget) keeps the
        pending gradient."""
        if lr is not None and not (lr > 0 and np.isfinite(lr)):
            raise InvalidRequest(f"lr must be a finite number > 0, got {lr!r}")
        with self._locked():
            pending = self.pending_gradient
            count = pending.count
            if count == 0:
                pending.clear()  # empty pushes end their round too
                return ApplyResult(self.step, 0)
            sums = pending.sums
            if average and pending.pushes > 1:
                sums = sums / pending.pushes
            self._update(pending.rows, sums, self.optimizer.lr if lr is None else lr)
            pending.clear()
            return ApplyResult(self.step, count)

    def _update(
        self, rows: np.ndarray, sums: np.ndarray, lr: float, grads: np.ndarray | None = None
    ) -> None:
        """One optimizer step of `rows` with gradient `sums` (summed from `grads` if given: an
        asynchronous push, whose sums were not checked yet). Caller holds the lock."""
        try:
            self._step_rows(rows, sums, lr, self.step + 1)
        except InvalidRequest as error:
            if grads is not None:  # refused for the push's own fault, if it was
                check_finite_sums(rows, sums, grads)
            raise InvalidRequest(f"update of table {self.name!r} refused: {error.detail}") from None
        self.step += 1
        self.tracker.note(rows)

    def _locked(self, wait: bool = True) -> TableLock:
        """`with self._locked(wait):` holds the table's lock for the block (service.core.locking);
        with wait=False, TableBusy if another holds it."""
        return self._lock.held(wait)

    # -- pending gradient -------------------------------------------------------------------
    def pending(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Copies of (rows, sums, pushes since the last apply) of the pending gradient."""
        with self._locked():
            pending = self.pending_gradient
            return pending.rows.copy(), pending.sums.copy(), pending.pushes

    def restore_pending(self, rows: np.ndarray, sums: np.ndarray, pushes: int) -> None:
        """Put back a pending gradient read by pending() (snapshots)."""
        with self._locked():
            self.pending_gradient.restore(rows, sums, pushes)
            self.tracker.note(None)

    # -- steps numbered by someone else (a cluster-mode table's shard, service.cluster) -----
    # A sharded table's step is one number for all its shards; its leader numbers each step
    # and has every shard take it in two phases (check everywhere, then write everywhere), so
    # a step one shard refuses changes no shard. Each kind writes its own check_step and
    # take_step; sealing the pending gradient is shared.
    def seal_pending(self) -> SealedGradient:
        """Take the pending gradient out: later pushes start a new one."""
        with self._locked():
            pending = self.pending_gradient
            sealed = SealedGradient(pending.rows.copy(), pending.sums.copy(), pending.pushes)
            pending.clear()
            self.tracker.note(None)
            return sealed

    def unseal(self, sealed: SealedGradient) -> None:
        """Put a sealed gradient back (its step was refused or called off): each row's sum
        becomes (what was pushed since) + sealed, which is sealed alone when nothing was; the
        pushes are counted. InvalidRequest or BudgetExceeded, with the sealed gradient not
        put back, if the sums would not be finite or do not fit."""
        with self._locked():
            pending = self.pending_gradient
            pushes = pending.pushes + sealed.pushes
            if len(sealed.rows):
                rows, slot_of_id = kernels.sorted_distinct(sealed.rows)
                pending.add(rows, slot_of_id, sealed.sums)
            pending.pushes = pushes
            self.tracker.note(None)

    def _note_labels_change(self) -> None:
        """The labels changed (not a row): counted, so the next snapshot writes the table."""
        with self._locked():
            self.tracker.note(None)


__all__ = ["DTYPES", "ApplyResult", "PushResult", "SealedGradient", "Table"]
