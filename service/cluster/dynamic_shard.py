"""One shard of a cluster-mode dynamic table: the keys that hash to it, on the core's own
DynamicTable (service.core.dynamic), addressed by the keys themselves.

What a fixed table's shard (service.cluster.shard.ShardTable) does with row numbers, this does
with keys: no translation at the door, only the check that each key is this shard's. Each key
lives on one shard, so its row, update step and count, ttl, admission count and pending
gradient are exact there; what spans shards is the leader's (service.cluster.leader): the step
number and eviction by capacity, decided for the whole table from every shard's candidates
(service.core.dynamic.numbered_steps). An apply=true push decides admission in phase one and
counts it in phase two, so a step another shard refuses counts nothing.

Admission counts are capped per shard (max_candidates each): the contract's bound holds (a key
is late only after max_candidates other candidates of its shard were seen since it), and with
fewer candidates than that every shard's counts are the single-process table's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from service.cluster.journal import Journal
from service.cluster.placement import Place, TableSpec
from service.cluster.shard import ShardTable
from service.cluster.shard_steps import Prepared
from service.core import checks, kernels
from service.core.budget import MemoryBudget
from service.core.dynamic.contents import Contents
from service.core.dynamic.snapshots import write_captured
from service.core.dynamic.spec import check_spec
from service.core.dynamic.table import DynamicTable
from service.core.errors import InvalidRequest, ShardMapChanged
from service.core.optimizers import make_optimizer
from service.core.pending import check_finite_sums
from service.core.sharded_snapshots import Part, part_files
from service.core.snapshot_files import WrittenTable
from service.sharding import shard_of


class DynamicShardTable(ShardTable):
    """The rows of one shard of a dynamic table, addressed by key. Thread-safe."""

    table: DynamicTable  # type: ignore[assignment]  # the dynamic kind of the core's table

    def __init__(self, spec: TableSpec, place: Place, table: DynamicTable, pushes: int,
                 journal: Journal) -> None:
        super().__init__(spec, place, table, np.empty(0, np.int64),  # type: ignore[arg-type]
                         pushes, journal)
        self._staged_rows: tuple[str, np.ndarray, np.ndarray] | None = None  # token, keys, rows
        self._directory: Path | None = None  # a snapshot begun
        self._contents: Contents | None = None  # its instant, once captured
        self._started = 0.0

    @classmethod
    def fresh(cls, spec: TableSpec, place: Place, journal: Journal,
              budget: MemoryBudget | None = None) -> DynamicShardTable:
        """An empty shard (a dynamic table starts with no rows)."""
        table = DynamicTable(spec.name, spec.embedding_dim,
                             make_optimizer(spec.optimizer or {"kind": "sgd"}),
                             settings=check_spec(spec.dynamic or {}), dtype=spec.dtype,
                             init=spec.init_spec(), seed=spec.seed,
                             max_staleness=spec.max_staleness, budget=budget,
                             capacity_here=False)
        return cls(spec, place, table, 0, journal)

    @classmethod
    def of_part(cls, spec: TableSpec, place: Place, part: Part,
                journal: Journal) -> DynamicShardTable:
        if part.journal is not None:
            journal.load_json(part.journal)
        assert isinstance(part.table, DynamicTable)
        part.table.leave_capacity_to_leader()
        return cls(spec, place, part.table, part.pushes, journal)

    # -- what the API layer and the leader read ------------------------------------------------
    @property
    def capacity(self) -> int | None:
        return self.table.settings.capacity

    @property
    def rows(self) -> int:
        return self.table.live_rows

    @property
    def nbytes(self) -> int:
        return self.table.nbytes + self.journal.nbytes

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "evicted_rows": self.table.evicted_rows}

    def check_ids(self, ids: np.ndarray) -> None:
        checks.check_id_kind(ids)

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """(n,) the keys of ids (int64: uint64 ids the same bits); ShardMapChanged if one is
        not this shard's."""
        keys = self.table.keys_of(ids)  # (n,)
        if len(keys):
            owner = shard_of(keys, self.place.shards)  # (n,)
            if (owner != self.place.shard).any():
                stray = int(keys[np.argmax(owner != self.place.shard)])
                raise ShardMapChanged(
                    f"id {stray} of table {self.name!r} is not held by shard "
                    f"{self.place.shard} of {self.place.shards}")
        return keys

    # -- pushes and steps ---------------------------------------------------------------------
    def push(self, ids: np.ndarray, grads: np.ndarray, *, counted: bool, step: int | None,
             wait: bool = True) -> dict[str, int]:
        keys = self.rows_of(ids)
        flat_grads = np.asarray(grads).reshape(len(keys), self.embedding_dim)  # (n, dim)
        result = self.table.push(keys, flat_grads, step=step, wait=wait)  # names keys itself
        if counted:
            self.pushes += 1
        return {"rows": int(keys.size), "pending_rows": result.pending_rows,
                "step": result.step, "rows_updated": 0,
                "dropped_rows": int(result.dropped_rows or 0)}

    def prepare_push(self, txn: str, step: int, lr: float, ids: np.ndarray,
                     grads: np.ndarray) -> dict[str, int]:
        """Phase one of an apply=true push: the sums of the admitted keys, checked; which keys
        are admitted decided (and counted at commit)."""
        keys = self.rows_of(ids)
        flat_grads = kernels.c_array(np.asarray(grads).reshape(len(keys), self.embedding_dim),
                                     self.dtype)  # (n, dim)
        distinct, slot_of_id = kernels.sorted_distinct(keys)  # (k,), (n,)
        sums = np.zeros((len(distinct), self.embedding_dim), dtype=self.dtype)  # (k, dim)
        kernels.scatter_add(sums, slot_of_id, flat_grads, len(distinct) == len(keys))
        with self._lock:
            if self.table.step >= step:  # the leader is behind (see Leader.caught_up)
                return {"ahead": self.table.step}
            kept, candidates = self.table.decide_admission(distinct)
            keep_id = kept[slot_of_id]  # (n,)
            check_finite_sums(distinct[kept], sums[kept], flat_grads[keep_id])
            self.prepared[txn] = Prepared(step, lr, distinct[kept], sums[kept], None, 0,
                                          candidates)
            self._check(txn)
            return {"rows": int(keys.size), "distinct": int(kept.sum()),
                    "pending_rows": self.table.pending_rows,
                    "dropped_rows": int(len(keys) - keep_id.sum())}

    def _check(self, txn: str) -> None:
        prepared = self.prepared[txn]
        if not len(prepared.rows):
            return
        try:
            self.table.check_step(prepared.rows, prepared.sums, prepared.lr, prepared.step)
        except InvalidRequest:
            self._abort(txn)
            raise

    def commit(self, txn: str, step: int) -> int:
        """Phase two: count the admission decided, make and update the rows, expire by ttl;
        step `step` (none known: the step number and the ttl only)."""
        with self._lock:
            prepared = self.prepared.pop(txn, None)
            if prepared is None:
                empty = np.empty(0, np.int64)
                self.table.take_step(empty, np.empty((0, self.embedding_dim), self.dtype), 0.0,
                                     max(step, self.step))
                return 0
            self.table.take_step(prepared.rows, prepared.sums, prepared.lr,
                                 max(step, self.step), prepared.candidates)
            return int(len(prepared.rows))

    # -- eviction by capacity, for the whole table (the leader's) ---------------------------
    def eviction_candidates(self, count: int) -> dict[str, list[int]]:
        values, keys = self.table.eviction_candidates(count)
        return {"values": values.tolist(), "keys": keys.tolist()}

    def evict_keys(self, keys: np.ndarray) -> int:
        with self._lock:
            return self.table.evict_keys(np.asarray(keys, dtype=np.int64))

    # -- importing weights ----------------------------------------------------------------
    def stage_weights(self, token: str, ids: np.ndarray, rows: np.ndarray) -> None:
        """Hold this shard's keys and rows of an imported .npz until the leader sets them."""
        keys = self.rows_of(ids)
        with self._lock:
            self._staged_rows = (token, keys, np.asarray(rows))

    def swap_weights(self, token: str) -> int:
        """Set the staged rows (made where absent), pending gradient dropped, as the single
        process's set_rows; the leader then evicts by capacity. The pending rows dropped."""
        with self._lock:
            staged, self._staged_rows = self._staged_rows, None
            if staged is None or staged[0] != token:
                raise InvalidRequest(f"no weights staged for import {token!r} on shard "
                                     f"{self.place.shard} of table {self.name!r}")
            self.pushes = 0
            return self.table.set_rows(staged[1], staged[2])

    # -- snapshots ------------------------------------------------------------------------------
    def snapshot_begin(self, directory: Path) -> None:
        """Nothing is streamed before the instant (a dynamic table keeps its instant's rows
        aside while they are written: service.core.dynamic.capture)."""
        directory.mkdir()
        self._directory, self._contents, self._started = directory, None, time.perf_counter()

    def snapshot_capture(self) -> int:
        assert self._directory is not None, "snapshot_begin first"
        with self._lock:
            self._contents = self.table.capture()
            self._extra = part_files(np.empty(0, np.int64), self.place.shard, self.place.shards,
                                     self.pushes, self.journal.to_json())
        return self._contents.step

    def snapshot_complete(self) -> WrittenTable:
        directory, contents = self._directory, self._contents
        self._directory = self._contents = None
        assert directory is not None and contents is not None, "snapshot_capture first"
        return write_captured(self.table, directory, contents, self._started, extra=self._extra)

    def snapshot_cancel(self) -> None:
        if self._contents is not None:
            self.table.release()
        self._directory = self._contents = None


def shard_class(spec: TableSpec) -> type[ShardTable]:
    """The kind of shard a table's spec makes."""
    return DynamicShardTable if spec.dynamic is not None else ShardTable


__all__ = ["DynamicShardTable", "shard_class"]
