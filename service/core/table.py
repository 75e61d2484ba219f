"""A fixed table: a (num_embeddings, embedding_dim) matrix, ids 0..num_embeddings-1.

The shared machinery (lock, pending gradient, push, apply, staleness, labels, change counting)
is service.core.table_base.Table's; this class holds the matrix and its optimizer state, checks
ids against the range, and keeps the snapshot protocol of dense arrays (mark the rows that
change while a snapshot streams the arrays, then rewrite them: service.core.snapshots). The
pending gradient is a sparse accumulator (service.core.pending): memory and time follow the
rows pushed, never the table size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from service.core import checks, kernels
from service.core.budget import MemoryBudget
from service.core.errors import InvalidRequest
from service.core.gather import Progress, take_rows
from service.core.initializers import InitSpec, initial_weights
from service.core.locking import TableBusy
from service.core.optimizers import Optimizer
from service.core.snapshot_changes import TablePoint
from service.core.table_base import DTYPES, ApplyResult, PushResult, SealedGradient, Table

__all__ = ["DTYPES", "ApplyResult", "EmbeddingTable", "PushResult", "SealedGradient", "TableBusy"]


class EmbeddingTable(Table):
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
        super().__init__(name, embedding_dim, optimizer, dtype=dtype, init=init, seed=seed,
                         max_staleness=max_staleness, budget=budget)
        shape = (num_embeddings, embedding_dim)
        self.weights = kernels.c_array(  # the kernels update it in place
            weights if weights is not None else initial_weights(shape, self.dtype, self.init, seed),
            self.dtype, writable=True)
        self.state = ({key: kernels.c_array(value, self.dtype, writable=True)
                       for key, value in state.items()} if state is not None
                      else optimizer.init_state(shape, self.dtype))

    @property
    def num_embeddings(self) -> int:
        return int(self.weights.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held: weights, optimizer state, the pending-gradient structures and labels."""
        state = sum(array.nbytes for array in self.state.values())
        return self.weights.nbytes + state + self.pending_nbytes + self.labels.nbytes

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "num_embeddings": self.num_embeddings, **super().info()}

    def check_ids(self, ids: np.ndarray) -> None:
        """ids must be integers in [0, num_embeddings) (service.core.checks)."""
        checks.check_ids(ids, self.num_embeddings, self.name)

    # -- reading ------------------------------------------------------------------------------
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

    # -- the hooks of Table.push and Table._update ----------------------------------------
    def _push_keys(self, ids: np.ndarray) -> np.ndarray:
        checks.check_id_kind(ids)
        if ids.dtype == np.uint64:  # ids >= 2**63 would wrap in int64: check them as they are
            self.check_ids(ids)
        return kernels.c_array(ids.reshape(-1), np.int64)  # (n,)

    def _check_rows(self, rows: np.ndarray) -> None:
        if len(rows):  # the lowest and highest id, from the sort
            checks.check_id_range(int(rows[0]), int(rows[-1]), self.num_embeddings, self.name)

    def _step_rows(self, rows: np.ndarray, sums: np.ndarray, lr: float, step: int) -> None:
        self.optimizer.update(self.weights, self.state, rows, sums, lr, step)

    # -- steps numbered by a cluster-mode table's leader (see Table.seal_pending) -------------
    def check_step(
        self, rows: np.ndarray, sums: np.ndarray, lr: float, step: int,
        names: np.ndarray | None = None,
    ) -> None:
        """InvalidRequest, naming the row as names[i] (default rows[i]), if step number `step`
        of `rows` with gradient `sums` would make a value not finite; nothing is written."""
        with self._locked():
            try:
                self.optimizer.check_update(self.weights, self.state, rows, sums, lr, step,
                                            names)
            except InvalidRequest as error:
                raise InvalidRequest(
                    f"update of table {self.name!r} refused: {error.detail}") from None

    def take_step(self, rows: np.ndarray, sums: np.ndarray, lr: float, step: int) -> None:
        """Step number `step` of the table: rows (k,) get gradient sums (k, dim) (none: this
        part of the table had nothing to update) and the table's step becomes `step`."""
        with self._locked():
            if len(rows):
                self.optimizer.update(self.weights, self.state, rows, sums, lr, step)
                self.tracker.note(rows)
            elif step != self.step:
                self.tracker.note(None)
            self.step = step

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
