"""One embedding table: weights, optimizer state and the pending (pushed, not yet applied) gradient.

The three operations of an embedding layer, for many concurrent callers:

- lookup(ids)        forward:  W[ids]
- push(ids, grads)   backward: np.add.at(G, ids, grads), summed across pushes until the next apply
- apply()            step:     the optimizer updates every row with a pending gradient; G cleared

The pending gradient is a sparse accumulator (service.core.pending): memory and time follow the
rows pushed, never the table size. One lock per table, taken one way (`with self._locked(wait):`)
makes every operation atomic; a push's sorting and summing run before taking it. An update that
would make a weight or state value inf or NaN is refused whole (InvalidRequest naming the
table, row and array). Every change is noted in the ChangeTracker that snapshots read.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.core import checks, kernels
from service.core.budget import MemoryBudget
from service.core.errors import InvalidRequest
from service.core.gather import Progress, take_rows
from service.core.initializers import InitSpec, initial_weights
from service.core.labels import LabelStore
from service.core.locking import TableBusy, TableLock
from service.core.optimizers import Optimizer
from service.core.pending import PendingGradient, check_finite_sums
from service.core.snapshot_changes import ChangeTracker, TablePoint

__all__ = ["DTYPES", "ApplyResult", "EmbeddingTable", "PushResult", "TableBusy"]

DTYPES: dict[str, np.dtype[Any]] = {name: np.dtype(name) for name in ("float32", "float64")}


@dataclass(frozen=True)
class PushResult:
    rows: int  # id entries pushed (duplicates counted)
    pending_rows: int  # distinct rows awaiting apply
    step: int
    rows_updated: int = 0  # rows the optimizer updated (asynchronous pushes only)


@dataclass(frozen=True)
class ApplyResult:
    step: int
    rows_updated: int


class EmbeddingTable:
    """A (num_embeddings, embedding_dim) matrix with an optimizer. Thread-safe."""

    def __init__(
        self,
        name: str,
        num_embeddings: int,
        embedding_dim: int,
        optimizer: Optimizer,
        *,
        dtype: str = "float32",
        init: InitSpec | None = None,
        seed: int | None = None,
        max_staleness: int | None = None,
        weights: np.ndarray | None = None,
        state: dict[str, np.ndarray] | None = None,
        budget: MemoryBudget | None = None,
    ) -> None:
        self.name = name
        self.dtype = DTYPES[dtype]
        self.optimizer = optimizer
        self.init = init or InitSpec()
        self.seed = seed
        self.max_staleness = max_staleness
        shape = (num_embeddings, embedding_dim)
        self.weights = kernels.c_array(  # the kernels update it in place
            weights if weights is not None else initial_weights(shape, self.dtype, self.init, seed),
            self.dtype, writable=True)
        self.state = ({key: kernels.c_array(value, self.dtype, writable=True)
                       for key, value in state.items()} if state is not None
                      else optimizer.init_state(shape, self.dtype))
        self.step = 0
        self.tracker = ChangeTracker()
        self.pending_gradient = PendingGradient(name, embedding_dim, self.dtype, budget)
        label_check = None if budget is None else functools.partial(budget.check_labels, name)
        self.labels = LabelStore(self._note_labels_change, label_check)  # service.core.labels
        self._lock = TableLock(name)

    @property
    def num_embeddings(self) -> int:
        return int(self.weights.shape[0])

    @property
    def embedding_dim(self) -> int:
        return int(self.weights.shape[1])

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

    @property
    def nbytes(self) -> int:
        """Bytes held: weights, optimizer state, the pending-gradient structures and labels."""
        state = sum(array.nbytes for array in self.state.values())
        return self.weights.nbytes + state + self.pending_nbytes + self.labels.nbytes

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_embeddings": self.num_embeddings,
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
        }

    def check_ids(self, ids: np.ndarray) -> None:
        """ids must be integers in [0, num_embeddings) (service.core.checks)."""
        checks.check_ids(ids, self.num_embeddings, self.name)

    # -- the three operations -------------------------------------------------------------
    def lookup(
        self, ids: np.ndarray, out: np.ndarray | None = None, *, wait: bool = True,
        progress: Progress | None = None,
    ) -> tuple[np.ndarray, int]:
        """W[ids], of shape ids.shape + (embedding_dim,), and the step it was read at. `out`
        (C-contiguous, that shape, the table's dtype) receives the rows if given; wait=False
        raises TableBusy rather than wait (event loops); progress: service.core.gather."""
        checks.check_ids(ids, self.num_embeddings, self.name)
        if out is None:
            out = np.empty((*ids.shape, self.embedding_dim), dtype=self.dtype)
        with self._locked(wait):
            take_rows(self.weights, ids, out, progress, self.step)
            return out, self.step

    def copy_rows(self, start: int, stop: int, out: np.ndarray) -> int:
        """Copy rows [start, stop) into out[: stop - start] under the lock (one consistent
        block of a scan: neighbour search, service.core.rows); returns the step."""
        with self._locked():
            np.copyto(out[: stop - start], self.weights[start:stop])
            return self.step

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
        checks.check_id_kind(ids)
        if ids.dtype == np.uint64:  # ids >= 2**63 would wrap in int64: check them as they are
            self.check_ids(ids)
        flat_ids = kernels.c_array(ids.reshape(-1), np.int64)  # (n,)
        rows, slot_of_id = kernels.sorted_distinct(flat_ids)  # (k,) sorted, (n,)
        if len(rows):  # the lowest and highest id, from the sort
            checks.check_id_range(int(rows[0]), int(rows[-1]), self.num_embeddings, self.name)
        dim = self.embedding_dim
        checks.check_grads(ids, grads, dim)
        checks.check_step(step)
        # (n, dim); a float64 beyond float32 becomes inf, refused as such by the sums' check
        flat_grads = kernels.c_array(grads.reshape(-1, dim), self.dtype)
        if apply:  # one step of the summed gradient; a non-finite sum makes the step refuse
            sums = np.zeros((len(rows), dim), dtype=self.dtype)  # (k, dim)
            kernels.scatter_add(sums, slot_of_id, flat_grads, len(rows) == len(flat_ids))
        # else the additions into the pending sums happen under the lock, in push order
        with self._locked(wait):
            checks.check_staleness(step, self.step, self.max_staleness, self.name)
            pending = self.pending_gradient
            if not apply:
                pending.add(rows, slot_of_id, flat_grads)
                self.tracker.note(None)
                return PushResult(ids.size, pending.count, self.step)
            if len(rows) == 0:  # an empty step changes nothing, as apply() with nothing
                return PushResult(0, pending.count, self.step)
            self._update(rows, sums, self.optimizer.lr, flat_grads)
            return PushResult(ids.size, pending.count, self.step, len(rows))

    def apply(self, lr: float | None = None, average: bool = False) -> ApplyResult:
        """One optimizer step over every row with a pending gradient, then clear it. With
        average=True each row's gradient is divided by the number of pushes since the last
        apply. Nothing pending: nothing changes (the step does not advance). A refused update
        (a new value not finite) keeps the pending gradient."""
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
            self.optimizer.update(self.weights, self.state, rows, sums, lr, self.step + 1)
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

    # -- whole-table changes and snapshots ---------------------------------------------------
    def replace_weights(self, weights: np.ndarray) -> int:
        """Make `weights` (same shape and dtype; the table owns it from now on) the table's
        weights in one step under the lock. The pending gradient was computed on the old weights
        and is dropped; optimizer state and step stay. Returns the pending rows dropped."""
        if weights.shape != self.weights.shape or weights.dtype != self.dtype:
            raise InvalidRequest(
                f"weights must have shape {list(self.weights.shape)} and dtype {self.dtype} "
                f"like table {self.name!r}, got {list(weights.shape)} {weights.dtype}"
            )
        weights = kernels.c_array(weights, self.dtype, writable=True)
        with self._locked():
            dropped = self.pending_gradient.count
            self.pending_gradient.clear()
            self.weights = weights
            self.tracker.note(slice(None))
            return dropped

    def start_change_tracking(self) -> None:
        """From now on remember which rows' weights or optimizer state change (snapshots)."""
        with self._locked():
            self.tracker.start(self.num_embeddings)

    def end_change_tracking(self, bring_up_to_date: Callable[[np.ndarray], None]) -> TablePoint:
        """Under the lock: stop tracking, call bring_up_to_date(rows changed since
        start_change_tracking) so the caller can copy those rows of self.weights / self.state,
        and return the step and pending gradient of that same instant."""
        with self._locked():
            bring_up_to_date(self.tracker.stop())
            pending = self.pending_gradient
            return TablePoint(self.step, self.tracker.changes, self.optimizer.config(),
                              pending.rows.copy(), pending.sums.copy(), pending.pushes)

    def cancel_change_tracking(self) -> None:  # a no-op once end_change_tracking ran
        with self._locked():
            self.tracker.cancel()

    def _note_labels_change(self) -> None:
        """The labels changed (not a row): counted, so the next snapshot writes the table."""
        with self._locked():
            self.tracker.note(None)
