"""A dynamic table's shards on their own (service.cluster.dynamic_shard, no Ray), driven through
the leader's protocol in this process (seal or prepare, check, commit, then the capacity round:
service.core.dynamic.numbered_steps.merge_candidates), against one DynamicTable given the same
requests: rows, optimizer state, update steps and counts, admission counts, evictions and
replies bit for bit, with eviction ties across shards; then the shards' snapshot read back
whole, and re-sharded into another count. The same protocol over Ray and HTTP: the API suite's
cluster transport (tests/api) and tests/cluster/test_dynamic_cluster.py."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.cluster.dynamic_shard import DynamicShardTable
from service.cluster.journal import Journal
from service.cluster.placement import Place, TableSpec
from service.core.dynamic import DynamicSpec, DynamicTable
from service.core.dynamic.numbered_steps import merge_candidates
from service.core.initializers import InitSpec
from service.core.optimizers import make_optimizer
from service.core.sharded_snapshots import read_shard, read_sharded_table, write_set_meta
from service.sharding import shard_of

DIM = 3
ADAM = {"kind": "adam", "lr": 0.05, "beta1": 0.8, "beta2": 0.95, "eps": 1e-6}


class Cluster:
    """S shards and the leader's rounds, in order, in this process."""

    def __init__(self, shards: int, settings: dict[str, Any], optimizer: dict[str, Any]) -> None:
        self.spec = TableSpec("t", None, DIM, "float64", {"kind": "normal", "std": 1.0}, 7,
                              optimizer, None, settings)
        self.shards = [DynamicShardTable.fresh(self.spec, Place(k, shards, "g"),
                                               Journal(100, 600.0, 2**20))
                       for k in range(shards)]
        self.capacity = settings.get("capacity")

    def parts(self, ids: np.ndarray, grads: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        owner = shard_of(ids, len(self.shards))
        return [(ids[owner == k], grads[owner == k]) for k in range(len(self.shards))]

    def push(self, ids: np.ndarray, grads: np.ndarray) -> dict[str, int]:
        replies = [shard.push(part_ids, part_grads, counted=k == 0, step=None)
                   for k, (shard, (part_ids, part_grads))
                   in enumerate(zip(self.shards, self.parts(ids, grads), strict=True))]
        return {"pending_rows": sum(r["pending_rows"] for r in replies),
                "dropped_rows": sum(r["dropped_rows"] for r in replies)}

    def push_now(self, ids: np.ndarray, grads: np.ndarray) -> dict[str, int]:
        txn, step = uuid.uuid4().hex, self.shards[0].step + 1
        replies = [shard.prepare_push(txn, step, ADAM["lr"], part_ids, part_grads)
                   for shard, (part_ids, part_grads)
                   in zip(self.shards, self.parts(ids, grads), strict=True)]
        updated = sum(r["distinct"] for r in replies)
        if updated == 0:
            step = self.shards[0].step
        for shard in self.shards:
            shard.commit(txn, step)
        self.evict()
        return {"rows_updated": updated, "dropped_rows": sum(r["dropped_rows"] for r in replies),
                "step": step}

    def apply(self) -> int:
        txn, step = uuid.uuid4().hex, self.shards[0].step + 1
        sealed = [shard.seal(txn, step, ADAM["lr"], True) for shard in self.shards]
        rows = sum(s["rows"] for s in sealed)
        if rows == 0:
            for shard in self.shards:
                shard.release(txn)
            return 0
        for shard in self.shards:
            shard.commit(txn, step)
        self.evict()
        return rows

    def evict(self) -> None:
        if self.capacity is None:
            return
        excess = sum(shard.rows for shard in self.shards) - self.capacity
        if excess <= 0:
            return
        found = [shard.eviction_candidates(excess) for shard in self.shards]
        chosen = merge_candidates([(np.asarray(f["values"], np.int64),
                                    np.asarray(f["keys"], np.int64)) for f in found], excess)
        for shard, keys in zip(self.shards, chosen, strict=True):
            shard.evict_keys(keys)


def state_of(tables: list[DynamicTable]) -> dict[str, Any]:
    """Every key's row, optimizer state, update step and count, the admission counts, the
    pending gradient, step and evictions, of one table or of shards together."""
    keys, rows, last, updates, admitted, counts, pending, sums = [], [], [], [], [], [], [], []
    for table in tables:
        contents = table.capture()
        part = table.captured_rows(contents.slots)
        table.release()
        keys.append(contents.keys)
        rows.append(np.concatenate([part[name] for name in sorted(part)], axis=1))
        last.append(contents.last_step)
        updates.append(contents.updates)
        if contents.admission is not None:
            admitted.append(contents.admission["keys"])
            counts.append(contents.admission["counts"])
        pending.append(contents.pending_rows)
        sums.append(contents.pending_sums)
    order = np.argsort(np.concatenate(keys))
    by_pending = np.argsort(np.concatenate(pending))
    by_candidate = np.argsort(np.concatenate(admitted)) if admitted else np.empty(0, int)
    return {"keys": np.concatenate(keys)[order], "rows": np.concatenate(rows)[order],
            "last_step": np.concatenate(last)[order],
            "updates": np.concatenate(updates)[order],
            "candidates": np.concatenate(admitted)[by_candidate] if admitted else None,
            "counts": np.concatenate(counts)[by_candidate] if counts else None,
            "pending": np.concatenate(pending)[by_pending],
            "sums": np.concatenate(sums)[by_pending],
            "step": {table.step for table in tables},
            "evicted": sum(table.evicted_rows for table in tables)}


def assert_same(single: DynamicTable, tables: list[DynamicTable]) -> None:
    ours, theirs = state_of([single]), state_of(tables)
    for field, value in ours.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(theirs[field], value, err_msg=field)
        else:
            assert theirs[field] == value, field


SETTINGS = [
    {"capacity": 9, "evict": "lru"},
    {"capacity": 9, "evict": "lfu"},
    {"capacity": 12, "evict": "lru", "ttl_steps": 3, "admit_after": 2},
    {"capacity": None, "admit_after": 3, "evict": "lfu", "ttl_steps": 4},
]


@pytest.mark.parametrize("shards", [2, 3])
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k}{v}" for k, v in
                                                                      s.items()))
def test_shards_are_one_dynamic_table(shards: int, settings: dict[str, Any],
                                      tmp_path: Path) -> None:
    """Random pushes (duplicates, keys over the whole int64 range), applies and apply=true
    pushes: the shards together hold bit for bit what one table holds after each request,
    replies included; capacity eviction picks the table's rows (ties of the same last step or
    count fall on keys of both shards: every step touches several keys)."""
    rng = np.random.default_rng(shards * 31 + len(settings))
    pool = rng.integers(-(2**63), 2**63 - 1, 30, dtype=np.int64)
    single = DynamicTable("t", DIM, make_optimizer(ADAM), dtype="float64",
                          init=InitSpec("normal", std=1.0), seed=7,
                          settings=DynamicSpec(**settings))
    cluster = Cluster(shards, settings, ADAM)
    for _ in range(40):
        ids = rng.choice(pool, int(rng.integers(1, 9)))
        grads = rng.normal(size=(len(ids), DIM))
        action = rng.random()
        if action < 0.5:
            expected = single.push(ids, grads)
            got = cluster.push(ids, grads)
            assert got == {"pending_rows": expected.pending_rows,
                           "dropped_rows": expected.dropped_rows}
        elif action < 0.75:
            assert cluster.apply() == single.apply().rows_updated
        else:
            expected = single.push(ids, grads, apply=True)
            got = cluster.push_now(ids, grads)
            assert got == {"rows_updated": expected.rows_updated,
                           "dropped_rows": expected.dropped_rows, "step": expected.step}
        assert_same(single, [shard.table for shard in cluster.shards])
    assert single.evicted_rows > 0 or settings.get("capacity") is None
    # the shards' snapshot, read back whole and into another shard count
    for k, shard in enumerate(cluster.shards):
        shard.snapshot_begin(tmp_path / f"shard-{k}")
        shard.snapshot_capture()
        shard.snapshot_complete()
    write_set_meta(tmp_path, name="t", shards=shards, step=single.step, num_embeddings=None)
    whole = read_sharded_table(tmp_path)
    assert isinstance(whole, DynamicTable)
    assert_same(single, [whole])
    other = 5 - shards
    parts = [read_shard(tmp_path, k, other).table for k in range(other)]
    assert_same(single, parts)  # type: ignore[arg-type]
    assert all(part.capacity_here is None for part in parts)  # type: ignore[attr-defined]
