"""One embedding table: weights, optimizer state and the pending (pushed, not yet applied) gradient.

The three operations of an embedding layer, for many concurrent callers:

- lookup(ids)        forward:  W[ids]
- push(ids, grads)   backward: np.add.at(G, ids, grads), summed across pushes until the next apply
- apply()            step:     the optimizer updates every row with a pending gradient; G cleared

The pending gradient is a sparse accumulator (service.core.pending): memory and time follow the
rows pushed, never the table size. One lock per table makes every operation atomic with respect
to the others; the sorting of a push's ids runs before taking it.

Every change goes through `_note_change` (under the lock): it counts changes, so snapshots skip
tables that did not change, and while a snapshot is being written it marks the rows whose
weights or optimizer state changed, so the snapshot can bring those rows up to date at the end
instead of holding the lock for the whole write (service.core.snapshots).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.core.errors import InvalidRequest, StaleGradient
from service.core.initializers import InitSpec, initial_weights
from service.core.labels import LabelStore
from service.core.optimizers import Optimizer
from service.core.pending import PendingGradient, check_finite_sums
from service.core.scatter import sum_duplicate_rows

DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype(np.float32), "float64": np.dtype(np.float64)
}


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


@dataclass(frozen=True)
class TablePoint:
    """What a snapshot records of one instant besides the arrays (see end_change_tracking)."""

    step: int
    changes: int
    optimizer: dict[str, Any]
    pending_rows: np.ndarray  # (k,) int64
    pending_sums: np.ndarray  # (k, dim)
    pushes_since_apply: int


class TableBusy(Exception):
    """Another operation holds the table. Raised only by calls made with wait=False, before
    anything changed: the caller runs the operation again where waiting is fine (a thread)."""


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
    ) -> None:
        self.name = name
        self.dtype = DTYPES[dtype]
        self.optimizer = optimizer
        self.init = init or InitSpec()
        self.seed = seed
        self.max_staleness = max_staleness
        shape = (num_embeddings, embedding_dim)
        self.weights = (
            weights if weights is not None else initial_weights(shape, self.dtype, self.init, seed)
        )
        self.state = state if state is not None else optimizer.init_state(shape, self.dtype)
        self.step = 0
        self.changes = 0  # changes since creation (or restore); see _note_change
        self._changed_rows: np.ndarray | None = None  # (num_embeddings,) bool while tracking
        self._lock = threading.Lock()
        self.pending_gradient = PendingGradient(embedding_dim, self.dtype)
        self.labels = LabelStore(on_change=self._note_labels_change)  # service.core.labels

    # -- shape and size -------------------------------------------------------------------
    @property
    def num_embeddings(self) -> int:
        return self.weights.shape[0]

    @property
    def embedding_dim(self) -> int:
        return self.weights.shape[1]

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

    # -- validation -------------------------------------------------------------------------
    def check_ids(self, ids: np.ndarray) -> None:
        """ids must be integers in [0, num_embeddings)."""
        if ids.dtype.kind not in "iu":
            raise InvalidRequest(f"ids must be integers, got dtype {ids.dtype}")
        if ids.size == 0:
            return
        low, high = int(ids.min()), int(ids.max())
        if low < 0:
            raise InvalidRequest(f"ids must be >= 0, got {low}")
        if high >= self.num_embeddings:
            raise InvalidRequest(
                f"ids must be < num_embeddings={self.num_embeddings} of table {self.name!r}, "
                f"got {high}"
            )

    def check_grads(self, ids: np.ndarray, grads: np.ndarray) -> None:
        expected = (*ids.shape, self.embedding_dim)
        if grads.shape != expected:
            raise InvalidRequest(
                f"grads must have shape ids.shape + (embedding_dim,) = {list(expected)}, "
                f"got {list(grads.shape)}"
            )
        if grads.dtype.kind not in "fiu":
            raise InvalidRequest(f"grads must be numbers, got dtype {grads.dtype}")
        if grads.dtype.kind == "f" and not np.isfinite(grads).all():
            raise InvalidRequest("grads must be finite, got NaN or infinity")

    # -- the three operations -------------------------------------------------------------
    def lookup(
        self, ids: np.ndarray, out: np.ndarray | None = None, *, wait: bool = True
    ) -> tuple[np.ndarray, int]:
        """W[ids], of shape ids.shape + (embedding_dim,), and the step it was read at.
        `out` (C-contiguous, that shape and the table's dtype) receives the rows if given.
        wait=False raises TableBusy instead of waiting for another operation (event loops)."""
        self.check_ids(ids)
        shape = (*ids.shape, self.embedding_dim)
        if out is None:
            out = np.empty(shape, dtype=self.dtype)
        flat_out = out.reshape(-1, self.embedding_dim)  # (n, dim), a view
        self._acquire(wait)
        try:
            np.take(self.weights, ids.reshape(-1), axis=0, out=flat_out)
            return out, self.step
        finally:
            self._lock.release()

    def copy_rows(self, start: int, stop: int, out: np.ndarray) -> int:
        """Copy rows [start, stop) into out[: stop - start] under the lock (one consistent
        block of a scan: neighbour search, service.core.rows); returns the step."""
        with self._lock:
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
        self.check_ids(ids)
        self.check_grads(ids, grads)
        self._check_step(step)
        flat_ids = ids.reshape(-1)  # (n,)
        flat_grads = grads.reshape(-1, self.embedding_dim).astype(self.dtype, copy=False)
        if apply:  # one step of the summed gradient: the sums are all it needs
            with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused just below
                rows, sums = sum_duplicate_rows(flat_ids, flat_grads)
            check_finite_sums(rows, sums)
        else:  # the additions into the pending sums happen under the lock, in push order
            rows, slot_of_id = np.unique(flat_ids, return_inverse=True)
        self._acquire(wait)
        with self._lock_held():
            self._check_staleness(step)
            if apply:
                if len(rows) == 0:  # an empty step changes nothing, as apply() with nothing
                    return PushResult(0, self.pending_gradient.count, self.step)
                self.step += 1
                self.optimizer.update(
                    self.weights, self.state, rows, sums, self.optimizer.lr, self.step
                )
                self._note_change(rows)
                return PushResult(ids.size, self.pending_gradient.count, self.step, len(rows))
            self.pending_gradient.add(rows, slot_of_id.reshape(-1), flat_grads)
            self._note_change(None)
            self.pending_gradient.pushes += 1
            return PushResult(ids.size, self.pending_gradient.count, self.step)

    def apply(self, lr: float | None = None, average: bool = False) -> ApplyResult:
        """One optimizer step over every row with a pending gradient, then clear it. With
        average=True each row's gradient is divided by the number of pushes since the last
        apply. Nothing pending: nothing changes (the step does not advance)."""
        if lr is not None and not (lr > 0 and np.isfinite(lr)):
            raise InvalidRequest(f"lr must be a finite number > 0, got {lr!r}")
        with self._lock:
            pending = self.pending_gradient
            count = pending.count
            if count == 0:
                pending.pushes = 0  # empty pushes end their round too
                return ApplyResult(self.step, 0)
            rows, sums = pending.rows, pending.sums
            if average and pending.pushes > 1:
                sums = sums / pending.pushes
            self.step += 1
            self.optimizer.update(
                self.weights, self.state, rows, sums, self.optimizer.lr if lr is None else lr,
                self.step,
            )
            self._note_change(rows)
            pending.clear()
            return ApplyResult(self.step, count)

    def _acquire(self, wait: bool) -> None:
        if not self._lock.acquire(blocking=wait):
            raise TableBusy(self.name)

    @contextmanager
    def _lock_held(self) -> Iterator[None]:
        """Releases the lock (taken by _acquire) when the block ends."""
        try:
            yield
        finally:
            self._lock.release()

    # -- pending gradient -------------------------------------------------------------------
    def pending(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Copies of (rows, sums, pushes since the last apply) of the pending gradient."""
        with self._lock:
            pending = self.pending_gradient
            return pending.rows.copy(), pending.sums.copy(), pending.pushes

    def restore_pending(self, rows: np.ndarray, sums: np.ndarray, pushes: int) -> None:
        """Put back a pending gradient read by pending() (snapshots)."""
        with self._lock:
            self.pending_gradient.clear()
            if len(rows):
                distinct, row_of_id = np.unique(rows.astype(np.int64), return_inverse=True)
                self.pending_gradient.add(distinct, row_of_id, sums.astype(self.dtype, copy=False))
            self.pending_gradient.pushes = pushes
            self._note_change(None)

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
        with self._lock:
            dropped = self.pending_gradient.count
            self.pending_gradient.clear()
            self.weights = weights
            self._note_change(slice(None))
            return dropped

    def start_change_tracking(self) -> None:
        """From now on remember which rows' weights or optimizer state change (snapshots)."""
        with self._lock:
            self._changed_rows = np.zeros(self.num_embeddings, dtype=bool)

    def end_change_tracking(self, bring_up_to_date: Callable[[np.ndarray], None]) -> TablePoint:
        """Under the lock: stop tracking, call bring_up_to_date(rows changed since
        start_change_tracking) so the caller can copy those rows of self.weights / self.state,
        and return the step and pending gradient of that same instant."""
        with self._lock:
            changed = self._changed_rows
            self._changed_rows = None
            rows = np.empty(0, np.int64) if changed is None else np.flatnonzero(changed)
            bring_up_to_date(rows)
            pending = self.pending_gradient
            return TablePoint(
                step=self.step,
                changes=self.changes,
                optimizer=self.optimizer.config(),
                pending_rows=pending.rows.copy(),
                pending_sums=pending.sums.copy(),
                pushes_since_apply=pending.pushes,
            )

    def cancel_change_tracking(self) -> None:
        with self._lock:
            self._changed_rows = None

    def _note_labels_change(self) -> None:
        """The labels changed (not a row): counted, so the next snapshot writes the table."""
        with self._lock:
            self._note_change(None)

    def _note_change(self, rows: np.ndarray | slice | None) -> None:
        """Count a change; while tracking, mark `rows` (their weights or optimizer state
        changed; None: only the pending gradient did). Caller holds the lock."""
        self.changes += 1
        if rows is not None and self._changed_rows is not None:
            self._changed_rows[rows] = True

    # -- staleness ---------------------------------------------------------------------------
    def _check_step(self, step: int | None) -> None:
        if step is not None and step < 0:
            raise InvalidRequest(f"step must be >= 0, got {step}")

    def _check_staleness(self, step: int | None) -> None:
        if step is None:
            return
        if step > self.step:
            raise InvalidRequest(
                f"step {step} is ahead of table {self.name!r}, which is at step {self.step}"
            )
        staleness = self.step - step
        if self.max_staleness is not None and staleness > self.max_staleness:
            raise StaleGradient(
                f"gradient computed at step {step} is {staleness} steps stale; table "
                f"{self.name!r} is at step {self.step} and accepts at most "
                f"max_staleness={self.max_staleness}"
            )
