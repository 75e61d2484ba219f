"""A dynamic table: rows keyed by any 64-bit integer, made on first use, admitted, evicted.

The shared machinery (lock, pending gradient, push, apply, staleness, labels, change counting)
is service.core.table_base.Table's; this class holds the rows and the building blocks of this
package, assembled as the contract says:

- lookup: the row of each key that has one, else its initial row (service.core.dynamic.
  initial_rows: a pure function of seed, init and key); a lookup stores nothing;
- push: a key keeps its gradient once admitted (AdmissionCounter; a key with a row or a pending
  gradient is admitted); the gradient of a key not admitted yet is dropped and counted;
- apply (and apply=true pushes): every admitted key with a pending gradient that has no row gets
  one (its initial row and fresh optimizer state, in a slot of the KeyIndex), then the optimizer
  step runs on those slots exactly as on a fixed table's rows (service.core.kernels.steps);
- after each step, the EvictionTracker names the rows that leave (ttl, then capacity: lru or
  lfu, ties to the smaller key); their slots go back to the index.

Every growth (rows, key index, eviction bookkeeping, admission candidates) is checked against
the memory budget before anything is allocated: BudgetExceeded (413) with nothing changed.
A refused step (a new value not finite) takes back the rows it made: nothing changed.

    table = DynamicTable("users", 32, make_optimizer({"kind": "adam"}),
                         settings=DynamicSpec(capacity=1_000_000, admit_after=2))
    table.push(np.array([2**62, -5]), grads); table.apply()
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np

from service.core import checks, kernels
from service.core.budget import MemoryBudget
from service.core.dynamic import capture, numbered_steps, warmup
from service.core.dynamic.admission import AdmissionCounter
from service.core.dynamic.contents import Contents
from service.core.dynamic.eviction import EvictionTracker
from service.core.dynamic.initial_rows import initial_rows
from service.core.dynamic.keyindex import KeyIndex, as_keys
from service.core.dynamic.slot_rows import SlotRows
from service.core.dynamic.spec import DynamicSpec
from service.core.errors import InvalidRequest
from service.core.initializers import InitSpec
from service.core.optimizers import Optimizer
from service.core.table_base import Table


def keys_of(ids: np.ndarray) -> np.ndarray:
    """(n,) the ids as C-contiguous int64 keys; InvalidRequest unless integers."""
    checks.check_id_kind(ids)
    return kernels.c_array(as_keys(ids).reshape(-1), np.int64)


def check_rows_to_set(name: str, dim: int, dtype: np.dtype[Any], keys: np.ndarray,
                      weights: np.ndarray) -> None:
    """What set_rows refuses (InvalidRequest): weights not (n, dim) of the table's dtype, a
    repeated key, a row not finite (also checked by a cluster-mode front before any shard)."""
    if weights.shape != (len(keys), dim) or weights.dtype != dtype:
        raise InvalidRequest(
            f"weights must have shape [{len(keys)}, {dim}] (one row per id) and dtype {dtype} "
            f"like table {name!r}, got {list(weights.shape)} {weights.dtype}")
    distinct, slot_of_id = kernels.sorted_distinct(keys)
    if len(distinct) != len(keys):
        repeated = distinct[np.bincount(slot_of_id) > 1][0]
        raise InvalidRequest(f"ids must be distinct, got {int(repeated)} more than once")
    finite = np.isfinite(weights).all(axis=1)  # (n,)
    if not finite.all():
        raise InvalidRequest(f"weights must be finite, got NaN or infinity in the row of "
                             f"id {int(keys[np.argmin(finite)])}")


class DynamicTable(Table):
    """Rows of embedding_dim keyed by int64 (or uint64, the same bits). Thread-safe."""

    num_embeddings = None  # no fixed vocabulary (TableInfo says null)
    ids_are_keys = True

    def __init__(
        self,
        name: str,
        embedding_dim: int,
        optimizer: Optimizer,
        *,
        settings: DynamicSpec | None = None,
        dtype: str = "float32",
        init: InitSpec | None = None,
        seed: int | None = None,
        max_staleness: int | None = None,
        budget: MemoryBudget | None = None,
        capacity_here: bool = True,
    ) -> None:
        """capacity_here=False: a shard of a cluster-mode table, whose leader evicts by
        capacity for the whole table (service.core.dynamic.numbered_steps); the ttl stays."""
        warmup.ensure_ready()  # the kernels are compiled (or loaded) before any is used
        # initial rows depend on the seed: one is chosen now if none was given, and kept
        super().__init__(name, embedding_dim, optimizer, dtype=dtype, init=init,
                         seed=secrets.randbits(63) if seed is None else seed,
                         max_staleness=max_staleness, budget=budget)
        self.settings = settings or DynamicSpec()
        self.evicted_rows = 0  # rows removed by eviction since creation
        self._index = KeyIndex()
        self._rows = SlotRows(embedding_dim, self.dtype, optimizer)
        self.capacity_here = self.settings.capacity if capacity_here else None
        self._eviction = EvictionTracker(self._index, self.settings.evict,
                                         self.capacity_here, self.settings.ttl_steps)
        self._admission: AdmissionCounter | None = (
            AdmissionCounter(self.settings.admit_after, self.settings.max_candidates)
            if self.settings.admit_after > 1 else None)
        self._candidates = np.empty(0, dtype=np.int64)  # keys _admit counted for this push

    # -- what TableInfo and the budget read -------------------------------------------------
    @property
    def live_rows(self) -> int:
        return len(self._index)

    @property
    def nbytes(self) -> int:
        """Bytes held: rows and optimizer state (allocated slots), key index, eviction
        bookkeeping, admission candidates, pending gradient and labels."""
        admission = self._admission.nbytes if self._admission is not None else 0
        return (self._rows.nbytes + self._index.nbytes + self._eviction.nbytes + admission
                + self.pending_nbytes + self.labels.nbytes)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "num_embeddings": None, **super().info(),
                "dynamic": self.settings.as_dict(), "rows": self.live_rows,
                "evicted_rows": self.evicted_rows}

    def check_ids(self, ids: np.ndarray) -> None:
        """Any integer is a key (uint64: the int64 of the same bits)."""
        checks.check_id_kind(ids)

    def keys_of(self, ids: np.ndarray) -> np.ndarray:
        """(n,) the ids as C-contiguous int64 keys; InvalidRequest unless integers."""
        return keys_of(ids)

    def initial_rows(self, keys: np.ndarray) -> np.ndarray:
        """(n, dim) the initial rows of keys: what a lookup of a key without a row returns."""
        return initial_rows(keys, self.embedding_dim, self.dtype, self.init, self.seed or 0)

    # -- reading ------------------------------------------------------------------------------
    def lookup(
        self, ids: np.ndarray, out: np.ndarray | None = None, *, wait: bool = True
    ) -> tuple[np.ndarray, int]:
        """The rows of ids (initial rows for keys without one), shape ids.shape + (dim,), and
        the step they were read at; `out` receives them if given. Stores nothing."""
        keys = self.keys_of(ids)  # (n,)
        if out is None:
            out = np.empty((*ids.shape, self.embedding_dim), dtype=self.dtype)
        flat_out = out.reshape(-1, self.embedding_dim)  # (n, dim), a view
        with self._locked(wait):
            missing = self._rows.gather(self._index.lookup(keys), flat_out)  # (m,)
            step = self.step
        if missing.size:  # a pure function of the key: computed outside the lock
            flat_out[missing] = self.initial_rows(keys[missing])
        return out, step

    def live_keys(self) -> np.ndarray:
        """(rows,) the keys that have a row now, ascending."""
        with self._locked():
            keys, _ = self._index.items(ascending=False)
        return np.sort(keys)

    def rows_of(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """((n,) bool which keys have a row, (r, dim) the rows of those), under the lock."""
        with self._locked():
            slots = self._index.lookup(keys)  # (n,)
            present = slots >= 0
            return present, np.take(self._rows.weights, slots[present], axis=0)

    def export_rows(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(keys ascending, their rows, the step): the table's weights, copied at one instant."""
        with self._locked():
            keys, slots = self._index.items(ascending=False)
            rows = np.take(self._rows.weights, slots, axis=0)  # (rows, dim)
            step = self.step
        order = np.argsort(keys, kind="stable")
        return keys[order], rows[order], step

    def row_view(self) -> Any:
        """The RowView neighbour search and labels read (service.core.rows)."""
        from service.core.dynamic.view import KeyedRows

        return KeyedRows(self)

    # -- the hooks of Table.push and Table._update ----------------------------------------
    def _push_keys(self, ids: np.ndarray) -> np.ndarray:
        return self.keys_of(ids)

    def _admit(self, rows: np.ndarray) -> np.ndarray | None:
        kept = np.ones(len(rows), dtype=bool)
        counter = self._admission
        if counter is None or len(rows) == 0:
            return kept
        known = (self._index.lookup(rows) >= 0) | self.pending_gradient.contains(rows)
        candidates = rows[~known]  # (c,) keys without a row or a pending gradient
        if candidates.size and self.budget is not None:
            growth = counter.nbytes_after(candidates.size) - counter.nbytes
            if growth > 0:
                self.budget.check_dynamic(self.name, growth,
                                          f"{candidates.size} admission candidates")
        kept[~known] = counter.would_admit(candidates)
        self._candidates = candidates
        return kept

    def _record_admission(self, rows: np.ndarray, kept: np.ndarray | None) -> None:
        if self._admission is not None and self._candidates.size:
            self._admission.record(self._candidates)
            self._candidates = np.empty(0, dtype=np.int64)

    def _step_rows(self, rows: np.ndarray, sums: np.ndarray, lr: float, step: int) -> None:
        slots, created = self._make_rows(rows)
        self._rows.before_write(slots)
        try:
            self.optimizer.update(self._rows.weights, self._rows.state, slots, sums, lr, step)
        except InvalidRequest:
            if created.any():  # take back the rows this step made: nothing changed
                self._index.delete(rows[created])
            raise
        self._eviction.touch(slots, step)
        self._evict(step)

    # -- rows made, set and removed (caller holds the lock) --------------------------------
    def _make_rows(self, keys: np.ndarray, weights: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """((k,) the slot of each distinct key, (k,) bool which were made now): a key without
        a row gets one, its initial row (or its row of `weights`, (k, dim)) and fresh optimizer
        state; the memory budget is asked first (BudgetExceeded, nothing changed)."""
        slots = self._index.lookup(keys)  # (k,)
        created = slots < 0
        new_keys = keys[created]
        if new_keys.size == 0:
            return slots, created
        index = self._index
        slot_count = index.slot_count + max(0, new_keys.size - index.free_count)
        if self.budget is not None:
            live = len(index) + new_keys.size  # then evicted: at most all (ttl), or the excess
            capacity = self.capacity_here
            freed = live if self.settings.ttl_steps else max(0, live - (capacity or live))
            growth = (self._rows.growth_bytes(slot_count)
                      + index.nbytes_after(new_keys.size, freed) - index.nbytes
                      + self._eviction.nbytes_after(slot_count) - self._eviction.nbytes)
            if growth > 0:
                self.budget.check_dynamic(self.name, growth, f"{new_keys.size} new rows")
        self._rows.grow(slot_count)
        new_slots = index.insert(new_keys)  # (m,)
        self._rows.write_new(new_slots, self.initial_rows(new_keys) if weights is None
                             else weights[created])
        slots[created] = new_slots
        return slots, created

    def _evict(self, step: int) -> None:
        gone = self._eviction.evict(step)  # (e,) slots, in the order they leave
        if gone.size:
            self._index.delete(self._index.slot_keys[gone])
            self.evicted_rows += int(gone.size)

    def set_rows(self, keys: np.ndarray, weights: np.ndarray) -> int:
        """Set the weights of rows `keys` (made if absent, with fresh optimizer state; others
        keep theirs), as an update at the current step (eviction runs after it). The pending
        gradient, computed on the old weights, is dropped: returns its rows."""
        keys = self.keys_of(keys)  # (n,)
        check_rows_to_set(self.name, self.embedding_dim, self.dtype, keys, weights)
        with self._locked():
            slots, _ = self._make_rows(keys, weights)
            self._rows.before_write(slots)
            self._rows.weights[slots] = weights
            dropped = self.pending_gradient.count
            self.pending_gradient.clear()
            self._eviction.touch(slots, self.step)
            self._evict(self.step)
            self.tracker.note(None)
            return dropped

    # -- steps numbered by a cluster-mode leader (service.core.dynamic.numbered_steps) -------
    def leave_capacity_to_leader(self) -> None:
        """Become a shard's table (as capacity_here=False): no eviction by capacity here."""
        with self._locked():
            self.capacity_here = self._eviction.capacity = None

    def decide_admission(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return numbered_steps.decide_admission(self, keys)

    def check_step(self, keys: np.ndarray, sums: np.ndarray, lr: float, step: int) -> None:
        numbered_steps.check_step(self, keys, sums, lr, step)

    def take_step(self, keys: np.ndarray, sums: np.ndarray, lr: float, step: int,
                  candidates: np.ndarray | None = None) -> None:
        numbered_steps.take_step(self, keys, sums, lr, step, candidates)

    def eviction_candidates(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        return numbered_steps.eviction_candidates(self, count)

    def evict_keys(self, keys: np.ndarray) -> int:
        return numbered_steps.evict_keys(self, keys)

    # -- snapshots (service.core.dynamic.capture, .snapshots) -------------------------------
    def capture(self) -> Contents:
        """Everything but the rows at this instant; the rows of this instant kept readable
        (captured_rows) until release(): service.core.dynamic.capture."""
        return capture.capture(self)

    def captured_rows(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        return capture.captured_rows(self, slots)

    def release(self) -> None:
        capture.release(self)

    def restore(self, contents: Contents, rows: dict[str, np.ndarray]) -> None:
        capture.restore(self, contents, rows)
