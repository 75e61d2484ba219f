"""Dynamic tables' parts put together or split another way: re-sharding on restore.

A sharded dynamic table's snapshot holds one dynamic-table snapshot per shard
(service.core.sharded_snapshots), each the keys that hash to that shard. Every per-key array is
sorted by key (service.core.dynamic.contents), so the keys of any shard of any shard count are
found in every part and joined: rows, optimizer state, update step and count, admission counts,
pending gradient. The table-wide counts are summed (evicted rows, pushes since the last apply,
forgotten admission candidates) and the admission clocks taken at their highest: each shard's
clock orders its own candidates (what forgetting reads), so the orders within a shard are kept.
"""

from __future__ import annotations

import numpy as np

from service.core.budget import MemoryBudget
from service.core.dynamic.contents import Contents
from service.core.dynamic.table import DynamicTable
from service.core.optimizers import make_optimizer
from service.sharding import shard_of


def _picked(keys: np.ndarray, shard: int | None, shards: int) -> np.ndarray:
    """(n,) bool: the keys of `shard` of `shards` (None: every key)."""
    if shard is None:
        return np.ones(len(keys), dtype=bool)
    return shard_of(keys, shards) == shard if len(keys) else np.zeros(0, dtype=bool)


def join_parts(tables: list[DynamicTable], pushes: list[int], shard: int | None, shards: int,
               budget: MemoryBudget | None, *, capacity_here: bool) -> DynamicTable:
    """One dynamic table of the keys of `shard` of `shards` (None: every key) found in the
    parts' tables; `pushes` the pushes since the last apply each part counted (all of them go
    to the table, or to shard 0 of the new count, which counts pushes)."""
    first = tables[0]
    captured: list[tuple[Contents, dict[str, np.ndarray]]] = []
    for table in tables:
        contents = table.capture()
        try:
            captured.append((contents, table.captured_rows(contents.slots)))
        finally:
            table.release()
    keys, last_step, updates, pending_rows, pending_sums = [], [], [], [], []
    rows: dict[str, list[np.ndarray]] = {name: [] for name in captured[0][1]}
    admission: dict[str, list[np.ndarray]] = {"keys": [], "counts": [], "last_push": []}
    for contents, part_rows in captured:
        mine = _picked(contents.keys, shard, shards)  # (n,)
        keys.append(contents.keys[mine])
        last_step.append(contents.last_step[mine])
        updates.append(contents.updates[mine])
        for name, array in part_rows.items():
            rows[name].append(array[mine])
        pending = _picked(contents.pending_rows, shard, shards)
        pending_rows.append(contents.pending_rows[pending])
        pending_sums.append(contents.pending_sums[pending])
        if contents.admission is not None:
            counted = _picked(contents.admission["keys"], shard, shards)
            for name in admission:
                admission[name].append(contents.admission[name][counted])
    all_keys = np.concatenate(keys)
    order = np.argsort(all_keys, kind="stable")  # (n,) ascending, as contents are
    dim = first.embedding_dim
    candidates = None
    if captured[0][0].admission is not None:
        candidate_keys = np.concatenate(admission["keys"])
        by_key = np.argsort(candidate_keys, kind="stable")
        candidates = {name: np.concatenate(arrays)[by_key] for name, arrays in admission.items()}
        counters = [c.admission for c, _ in captured if c.admission is not None]
        candidates["pushes"] = np.array(max(int(each["pushes"]) for each in counters))
        candidates["forgotten"] = np.array(sum(int(each["forgotten"]) for each in counters))
    base = captured[0][0]
    whole = shard in (None, 0)
    joined = Contents(
        all_keys[order], np.arange(len(order)), np.concatenate(last_step)[order],
        np.concatenate(updates)[order], candidates, np.concatenate(pending_rows),
        np.concatenate(pending_sums).reshape(-1, dim), sum(pushes) if whole else 0, base.step,
        sum(c.evicted_rows for c, _ in captured) if whole else 0, 0, base.optimizer)
    table = DynamicTable(first.name, dim, make_optimizer(base.optimizer),
                         settings=first.settings, dtype=first.dtype.name, init=first.init,
                         seed=first.seed, max_staleness=first.max_staleness, budget=budget,
                         capacity_here=capacity_here)
    table.restore(joined, {name: np.concatenate(arrays).reshape(-1, dim)[order]
                           for name, arrays in rows.items()})
    return table


__all__ = ["join_parts"]
