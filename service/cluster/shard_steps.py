"""The steps a shard takes when the leader (service.cluster.leader) numbers them, in two phases.

`seal` (an apply) or `prepare_push` (an asynchronous push, apply=true) sets the step's rows and
gradient aside and checks that every new value would be finite; then `commit` writes them, or
`abort` puts the gradient back (`release`: an apply that found nothing pending anywhere). A
step one shard refuses changes no shard. A shard already at or past the step answers
{"ahead": its step} and sets nothing aside (the leader catches up and numbers it again).

ShardSteps is a part of the shard (service.cluster.shard.ShardTable, which the dynamic shard
extends): it uses the shard's lock, core table, pending pushes and id translation.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from service.core import kernels
from service.core.errors import InvalidRequest
from service.core.pending import check_finite_sums
from service.core.table import EmbeddingTable, SealedGradient


@dataclass
class Prepared:
    """A step this shard has checked and holds, waiting for the leader's commit or abort."""

    step: int
    lr: float
    rows: np.ndarray  # (k,) the shard's rows
    sums: np.ndarray  # (k, dim) their gradient for this step
    sealed: SealedGradient | None  # what abort puts back (an apply's sealed gradient)
    counted: int  # pushes the seal took from the shard's count (abort puts them back)
    candidates: np.ndarray | None = None  # a dynamic table's keys to count for admission


class ShardSteps:
    """The two phases of the leader's steps, on a shard's rows (see the module docstring)."""

    table: EmbeddingTable
    prepared: dict[str, Prepared]  # the steps set aside, by the leader's txn
    pushes: int  # pushes counted since the last apply
    _lock: threading.Lock  # the shard's own lock

    if TYPE_CHECKING:  # what the shard (service.cluster.shard.ShardTable) provides

        @property
        def embedding_dim(self) -> int: ...

        @property
        def dtype(self) -> np.dtype[Any]: ...

        @property
        def step(self) -> int: ...

        @property
        def ids(self) -> np.ndarray: ...

        def rows_of(self, ids: np.ndarray) -> np.ndarray: ...

    def seal(self, txn: str, step: int, lr: float, check: bool) -> dict[str, int]:
        """Phase one of an apply: take the pending gradient (and the pushes counted) aside
        for step `step`; with `check`, refuse now (InvalidRequest, gradient put back) if a new
        value would not be finite. Returns the rows and pushes set aside, or {"ahead": step}
        with nothing set aside when this shard already took that step."""
        with self._lock:
            if self.table.step >= step:  # the leader is behind (see Leader.caught_up)
                return {"ahead": self.table.step}
            sealed = self.table.seal_pending()
            counted, self.pushes = self.pushes, 0
            self.prepared[txn] = Prepared(step, lr, sealed.rows, sealed.sums, sealed, counted)
            if check:
                self._check(txn)
            return {"rows": int(len(sealed.rows)), "pushes": counted}

    def divide(self, txn: str, divisor: int) -> None:
        """An apply with average=True: the set-aside sums divided by the table's pushes (as
        the single-process apply divides, when there were more than one), then checked."""
        with self._lock:
            prepared = self.prepared.get(txn)
            if prepared is None:
                return
            if divisor > 1:
                prepared.sums = prepared.sums / divisor
            self._check(txn)

    def prepare_push(self, txn: str, step: int, lr: float, ids: np.ndarray,
                     grads: np.ndarray) -> dict[str, int]:
        """Phase one of an asynchronous push (apply=true): sum this shard's part of it and
        check step `step` of those rows; nothing is written before commit."""
        rows = self.rows_of(ids)
        flat_grads = kernels.c_array(np.asarray(grads).reshape(len(rows), self.embedding_dim),
                                     self.dtype)  # (n, dim)
        distinct, slot_of_id = kernels.sorted_distinct(kernels.c_array(rows, np.int64))
        sums = np.zeros((len(distinct), self.embedding_dim), dtype=self.dtype)  # (k, dim)
        kernels.scatter_add(sums, slot_of_id, flat_grads, len(distinct) == len(rows))
        check_finite_sums(self.ids[distinct], sums, flat_grads)
        with self._lock:
            if self.table.step >= step:  # the leader is behind (see Leader.caught_up)
                return {"ahead": self.table.step}
            self.prepared[txn] = Prepared(step, lr, distinct, sums, None, 0)
            self._check(txn)
            return {"rows": int(rows.size), "distinct": int(len(distinct)),
                    "pending_rows": self.table.pending_rows}

    def _check(self, txn: str) -> None:
        """Refuse a prepared step whose new values would not be finite: forget it and put its
        gradient back. Caller holds the shard's lock."""
        prepared = self.prepared[txn]
        if not len(prepared.rows):
            return
        try:
            self.table.check_step(prepared.rows, prepared.sums, prepared.lr, prepared.step,
                                  names=self.ids[prepared.rows])
        except InvalidRequest:
            self._abort(txn)
            raise

    def commit(self, txn: str, step: int) -> int:
        """Phase two: write the prepared step (none known: this shard had no part in it, or
        lost it in a restart) and move to step `step`. Returns the rows updated."""
        with self._lock:
            prepared = self.prepared.pop(txn, None)
            if prepared is None or not len(prepared.rows):
                empty = np.empty(0, np.int64)
                self.table.take_step(empty, np.empty((0, self.embedding_dim), self.dtype),
                                     prepared.lr if prepared else 0.0, max(step, self.step))
                return 0
            self.table.take_step(prepared.rows, prepared.sums, prepared.lr, step)
            return int(len(prepared.rows))

    def abort(self, txn: str) -> None:
        with self._lock:
            self._abort(txn)

    def release(self, txn: str) -> None:
        """An apply that found nothing pending anywhere: drop what it set aside (the pushes
        counted included: empty pushes end their round too), the step unchanged."""
        with self._lock:
            self.prepared.pop(txn, None)

    def _abort(self, txn: str) -> None:
        prepared = self.prepared.pop(txn, None)
        if prepared is None:
            return
        self.pushes += prepared.counted
        if prepared.sealed is not None:
            self.table.unseal(prepared.sealed)
