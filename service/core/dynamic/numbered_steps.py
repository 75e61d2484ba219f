"""A dynamic table as one shard of a cluster-mode table: steps numbered by a leader, admission
decided in one phase and counted in the next, and capacity eviction decided for the whole table.

A sharded dynamic table (service.cluster) holds each key on the shard its hash names
(service.sharding), so everything per key stays on one shard and is exact there: the rows,
their update step and count, the ttl, the admission counts, the pending gradient. Two things
span shards:

- the step: the leader numbers it and each shard takes it in two phases (service.cluster.
  leader). Phase one checks (`check_step`, and `decide_admission` for an apply=true push: which
  keys keep their gradient, nothing counted yet); phase two writes (`take_step`: the
  admission counted, rows made, the optimizer step, the ttl);
- capacity: the single-process rule is global (while live rows exceed capacity remove the least
  recently / least often updated rows, ties by smaller key), so a shard does not evict by
  capacity itself (its table is made with `capacity_here=False`). After every step the leader
  asks each shard for its `eviction_candidates(k)` with k = live rows of the table - capacity,
  merges them by (last step or count, key) and has each shard `evict_keys` its share: exactly
  the rows one table would have evicted.

Functions of a DynamicTable (its methods of the same names call them), each under its lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from service.core.errors import InvalidRequest

if TYPE_CHECKING:
    from service.core.dynamic.table import DynamicTable


def decide_admission(table: DynamicTable, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """((k,) bool which of the distinct sorted `keys` keep their gradient, (c,) the candidates
    to count when the step is taken): the admission of an apply=true push, decided and not yet
    counted (a step another shard refuses counts nothing)."""
    with table._locked():
        kept = table._admit(keys)
        candidates, table._candidates = table._candidates, np.empty(0, dtype=np.int64)
    return (np.ones(len(keys), dtype=bool) if kept is None else kept), candidates


def check_step(table: DynamicTable, keys: np.ndarray, sums: np.ndarray, lr: float,
               step: int) -> None:
    """InvalidRequest if step number `step` of `keys` (distinct) with gradient `sums` (k, dim)
    would make a value not finite (rows not made yet: from their initial row and fresh
    optimizer state); nothing is written."""
    dim = table.embedding_dim
    with table._locked():
        slots = table._index.lookup(keys)  # (k,)
        present = slots >= 0
        weights = np.empty((len(keys), dim), dtype=table.dtype)  # (k, dim)
        state = table.optimizer.init_state((len(keys), dim), table.dtype)
        weights[present] = table._rows.weights[slots[present]]
        for name, array in state.items():
            array[present] = table._rows.state[name][slots[present]]
    if not present.all():  # a pure function of the key: outside the lock
        weights[~present] = table.initial_rows(keys[~present])
    try:
        table.optimizer.check_update(weights, state, np.arange(len(keys)), sums, lr, step,
                                     names=keys)
    except InvalidRequest as error:
        raise InvalidRequest(f"update of table {table.name!r} refused: {error.detail}") from None


def take_step(table: DynamicTable, keys: np.ndarray, sums: np.ndarray, lr: float, step: int,
              candidates: np.ndarray | None = None) -> None:
    """Step number `step`: count `candidates` for admission (those that still have no row nor
    pending gradient: a push meanwhile may have admitted them), make the rows of `keys` that
    have none, update them with `sums`, and remove the rows the ttl expires (capacity is the
    leader's: evict_keys). No keys: only the step number and the ttl."""
    with table._locked():
        if candidates is not None and candidates.size and table._admission is not None:
            known = (table._index.lookup(candidates) >= 0) | (
                table.pending_gradient.contains(candidates))
            if (~known).any():
                table._admission.record(candidates[~known])
        if len(keys):
            table._step_rows(keys, sums, lr, step)
            table.tracker.note(keys)
        else:
            table._evict(step)
            if step != table.step:
                table.tracker.note(None)
        table.step = max(step, table.step)


def eviction_candidates(table: DynamicTable, count: int) -> tuple[np.ndarray, np.ndarray]:
    """((m,) the order value, (m,) the key) of this table's `count` rows first to leave by its
    policy (lru: the step that last updated the row; lfu: its update count), ties to the
    smaller key, in that order; m = min(count, live rows). One pass over the live rows."""
    with table._locked():
        keys, slots = table._index.items(ascending=False)  # (n,) each
        tracker = table._eviction
        value = tracker.last_step(slots) if tracker.policy == "lru" else tracker.updates(slots)
    count = min(count, len(keys))
    if count <= 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    if count < len(keys):  # those at or below the count-th smallest value, then sorted
        bound = np.partition(value, count - 1)[count - 1]
        near = value <= bound
        value, keys = value[near], keys[near]
    order = np.lexsort((keys, value))[:count]
    return value[order], keys[order]


def evict_keys(table: DynamicTable, keys: np.ndarray) -> int:
    """Remove the rows of `keys` (chosen by the leader from eviction_candidates); returns the
    rows removed. Their weights and optimizer state are gone, as with eviction in one table."""
    with table._locked():
        slots = table._index.lookup(keys)  # (e,)
        live = slots >= 0
        if not live.any():
            return 0
        table._eviction.remove(slots[live])
        table._index.delete(keys[live])
        table.evicted_rows += int(live.sum())
        table.tracker.note(None)
        return int(live.sum())


def merge_candidates(parts: list[tuple[np.ndarray, np.ndarray]], count: int) -> list[np.ndarray]:
    """The leader's merge: of every shard's (order value, key) candidates, the `count` first
    by (value, key); returns each shard's keys among them."""
    values = np.concatenate([value for value, _ in parts]) if parts else np.empty(0, np.int64)
    keys = np.concatenate([key for _, key in parts]) if parts else np.empty(0, np.int64)
    owner = np.concatenate([np.full(len(key), shard, dtype=np.int64)
                            for shard, (_, key) in enumerate(parts)]) if parts else keys
    chosen = np.lexsort((keys, values))[:count]
    return [keys[chosen[owner[chosen] == shard]] for shard in range(len(parts))]


__all__ = ["check_step", "decide_admission", "eviction_candidates", "evict_keys",
           "merge_candidates", "take_step"]
