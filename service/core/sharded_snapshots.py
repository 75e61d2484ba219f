"""A sharded table's snapshot on disk: one part per shard, one instant for all of them.

A table served in cluster mode (service.cluster) is held by S shards, each the rows whose id
hashes to it (service.sharding). Its snapshot is one directory, committed as any table's is
(service.core.snapshot_store: tmp/, rename, CURRENT):

    cluster.json       format, name, shards S, step, num_embeddings, written_at
    shard-0/ ...       one part per shard: a table snapshot of the shard's rows in id order
    shard-<S-1>/       (service.core.snapshots: meta.json, weights.npy, state.*.npy, pending
                       rows as the part's row numbers, labels.json on shard 0), plus
                       ids.npy    (n_k,) int64: the table id of each of the part's rows
                       shard.json shard, shards, pushes since the last apply that this shard
                                  counted, and what the shard keeps besides rows (its
                                  idempotency journal), opaque here

Every part holds the same step: the leader takes all of them at one instant between steps.
This module reads such a snapshot back as one whole table (what a single-process service does
with it: `read_sharded_table`), or as the part of one shard of any shard count
(`read_shard`: re-sharding on restore), from a sharded snapshot or a single-process one.
Nothing here imports ray.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service import npy
from service.core.budget import MemoryBudget
from service.core.dynamic.resharding import join_parts
from service.core.dynamic.table import DynamicTable
from service.core.errors import SnapshotDamaged
from service.core.optimizers import make_optimizer
from service.core.snapshots import fsync_path, read_table
from service.core.table import EmbeddingTable
from service.core.table_base import Table
from service.sharding import shard_of

SET_FORMAT = "embedding-service-sharded-table-snapshot"
SET_FORMAT_VERSION = 1
SET_META = "cluster.json"
IDS = "ids.npy"
SHARD_META = "shard.json"


def part_name(shard: int) -> str:
    return f"shard-{shard}"


def is_sharded(snapshot_dir: Path) -> bool:
    return (snapshot_dir / SET_META).exists()


def part_files(ids: np.ndarray, shard: int, shards: int, pushes: int,
               journal: Any) -> dict[str, bytes]:
    """The files a shard's part holds besides its table snapshot (TableWrite.complete(extra))."""
    shard_meta = {"shard": shard, "shards": shards, "pushes_since_apply": pushes,
                  "journal": journal}
    return {IDS: npy.encode(np.ascontiguousarray(ids, dtype=np.int64)),
            SHARD_META: json.dumps(shard_meta).encode()}


def write_set_meta(set_dir: Path, *, name: str, shards: int, step: int,
                   num_embeddings: int | None) -> None:
    """cluster.json, fsynced with the directory: written once every part is complete."""
    meta = {"format": SET_FORMAT, "format_version": SET_FORMAT_VERSION, "name": name,
            "shards": shards, "step": step, "num_embeddings": num_embeddings,
            "parts": [part_name(shard) for shard in range(shards)],
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (set_dir / SET_META).write_text(json.dumps(meta, indent=2) + "\n")
    fsync_path(set_dir / SET_META)
    fsync_path(set_dir)


@dataclass
class Part:
    """One shard's rows: `table` holds them as rows 0..n-1 in id order, `ids` their table ids
    (ascending), or (a dynamic table's shard) `table` holds them by key and `ids` is empty;
    `pushes` the pushes since the last apply it counts; `journal` its extra."""

    table: Table
    ids: np.ndarray
    shard: int
    shards: int
    pushes: int
    journal: Any


def read_set_meta(set_dir: Path) -> dict[str, Any]:
    path = set_dir / SET_META
    try:
        meta = json.loads(path.read_text())
        if meta.get("format") != SET_FORMAT or meta.get("format_version") != SET_FORMAT_VERSION:
            raise ValueError(f"format {meta.get('format')!r} version "
                             f"{meta.get('format_version')!r} is not {SET_FORMAT!r} "
                             f"{SET_FORMAT_VERSION}")
        if meta.get("num_embeddings") is not None and (  # None: a dynamic table
                not isinstance(meta["num_embeddings"], int) or meta["num_embeddings"] < 0):
            raise ValueError(f"num_embeddings must be an integer >= 0 or null, got "
                             f"{meta['num_embeddings']!r}")
        for field in ("shards", "step"):
            if not isinstance(meta.get(field), int) or meta[field] < 0:
                raise ValueError(f"{field} must be an integer >= 0, got {meta.get(field)!r}")
        if meta["shards"] < 1 or meta.get("parts") != [part_name(k) for k in
                                                        range(meta["shards"])]:
            raise ValueError(f"parts must be shard-0 .. shard-{meta['shards'] - 1}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, AttributeError) as error:
        raise SnapshotDamaged(str(path), f"cannot be read ({error})") from None
    return dict(meta)


def read_part(part_dir: Path, budget: MemoryBudget | None = None,
              label_ids: int | None = None) -> Part:
    """A part as written. `label_ids`: the table's num_embeddings, the range its labels' ids
    are checked against (labels are keyed by table id, not by the part's row)."""
    table = read_table(part_dir, budget=budget, label_check=_range_check(label_ids))
    try:
        with open(part_dir / IDS, "rb") as file:
            ids = npy.load(file, field=IDS)
        meta = json.loads((part_dir / SHARD_META).read_text())
        shard, shards = int(meta["shard"]), int(meta["shards"])
        pushes = int(meta["pushes_since_apply"])
    except (OSError, npy.NpyError, ValueError, KeyError, TypeError) as error:
        raise SnapshotDamaged(str(part_dir), f"has no readable ids or shard.json ({error})"
                              ) from None
    ids = np.asarray(ids)
    if isinstance(table, DynamicTable):
        keys = table.live_keys()
        if len(keys) and not (shard_of(keys, shards) == shard).all():
            raise SnapshotDamaged(str(part_dir / "keys.npy"), f"holds keys that are not shard "
                                  f"{shard}'s of {shards}")
        return Part(table, ids, shard, shards, pushes, meta.get("journal"))
    table = _fixed(table, part_dir)
    if (ids.dtype != np.int64 or ids.shape != (table.num_embeddings,)
            or (len(ids) > 1 and not (ids[1:] > ids[:-1]).all())):
        raise SnapshotDamaged(str(part_dir / IDS), "must hold the part's ids: int64, one per row, "
                              "ascending")
    if len(ids) and not (shard_of(ids, shards) == shard).all():
        raise SnapshotDamaged(str(part_dir / IDS), f"holds ids that are not shard {shard}'s of "
                              f"{shards}")
    return Part(table, ids, shard, shards, pushes, meta.get("journal"))


def _fixed(table: Table, where: Path) -> EmbeddingTable:
    """A part of a fixed table is a fixed table (a dynamic table's parts: another layout)."""
    if not isinstance(table, EmbeddingTable):
        raise SnapshotDamaged(str(where), "holds a dynamic table where a fixed one was expected")
    return table


def _range_check(count: int | None) -> Any:
    if count is None:
        return None

    def check(ids: np.ndarray) -> None:
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= count):
            raise SnapshotDamaged("labels.json", f"holds an id outside [0, {count})")

    return check


def _parts(snapshot_dir: Path, budget: MemoryBudget | None) -> tuple[dict[str, Any], list[Part]]:
    meta = read_set_meta(snapshot_dir)
    parts = [read_part(snapshot_dir / part_name(k), budget, meta["num_embeddings"])
             for k in range(meta["shards"])]
    for part in parts:
        if part.table.step != meta["step"] or part.shards != meta["shards"]:
            raise SnapshotDamaged(str(snapshot_dir / part_name(part.shard)),
                                  f"is at step {part.table.step} of {part.shards} shards; "
                                  f"cluster.json says step {meta['step']} of {meta['shards']}")
    return meta, parts


def read_sharded_table(snapshot_dir: Path, budget: MemoryBudget | None = None) -> Table:
    """The whole table a sharded snapshot holds, as a single-process service serves it:
    bit-identical rows, optimizer state, step, pending gradient and labels."""
    meta, parts = _parts(snapshot_dir, budget)
    if meta["num_embeddings"] is None:  # a dynamic table: its parts joined by key
        return _joined(parts, None, 1, budget, capacity_here=True, labels_from=parts[0])
    count = meta["num_embeddings"]
    ids = np.concatenate([part.ids for part in parts])  # (n,)
    if len(ids) != count or not np.array_equal(np.sort(ids), np.arange(count)):
        raise SnapshotDamaged(str(snapshot_dir), f"its parts do not hold ids 0..{count - 1} "
                              "once each")
    return _assemble(meta["name"], parts, budget, count)


def read_shard(snapshot_dir: Path, shard: int, shards: int,
               budget: MemoryBudget | None = None) -> Part:
    """The rows of `shard` of `shards` in a table's snapshot, sharded (any shard count) or
    not: the part itself when the counts agree, else every old part filtered (re-sharding:
    the pending gradient follows its rows; the pushes since the last apply go to shard 0,
    which counts pushes; the journal is dropped, its requests being split another way)."""
    if is_sharded(snapshot_dir):
        meta = read_set_meta(snapshot_dir)
        count = meta["num_embeddings"]
        if meta["shards"] == shards:
            part = read_part(snapshot_dir / part_name(shard), budget, count)
            if part.table.step != meta["step"]:
                raise SnapshotDamaged(str(snapshot_dir / part_name(shard)),
                                      f"is at step {part.table.step}, cluster.json says "
                                      f"{meta['step']}")
            return part
        _, parts = _parts(snapshot_dir, budget)
    else:
        whole = read_table(snapshot_dir, budget=budget)
        pushes = whole.pending_gradient.pushes
        ids = (np.empty(0, np.int64) if isinstance(whole, DynamicTable)
               else np.arange(_fixed(whole, snapshot_dir).num_embeddings, dtype=np.int64))
        parts = [Part(whole, ids, 0, 1, pushes, None)]
    if isinstance(parts[0].table, DynamicTable):  # keys of the new shard, from every part
        joined = _joined(parts, shard, shards, budget, capacity_here=False,
                         labels_from=parts[0] if shard == 0 else None)
        pushes = sum(part.pushes for part in parts) if shard == 0 else 0
        return Part(joined, np.empty(0, np.int64), shard, shards, pushes, None)
    kept = [_select(part, shard, shards) for part in parts]
    table = _assemble(parts[0].table.name, kept, budget, None,
                      labels_from=parts[0] if shard == 0 else None)
    ids = np.sort(np.concatenate([part.ids for part in kept]))
    pushes = sum(part.pushes for part in parts) if shard == 0 else 0
    table.pending_gradient.pushes = pushes
    return Part(table, ids, shard, shards, pushes, None)


def _joined(parts: list[Part], shard: int | None, shards: int, budget: MemoryBudget | None,
            *, capacity_here: bool, labels_from: Part | None) -> DynamicTable:
    """A dynamic table of the parts' keys of `shard` (None: all), with the labels of
    `labels_from` (shard 0 keeps a table's labels)."""
    tables = [part.table for part in parts]
    assert all(isinstance(table, DynamicTable) for table in tables)
    table = join_parts(tables, [part.pushes for part in parts], shard,  # type: ignore[arg-type]
                       shards, budget, capacity_here=capacity_here)
    if labels_from is not None and len(labels_from.table.labels):
        table.labels.load_json(labels_from.table.labels.to_json(), lambda ids: None)
    return table


def _select(part: Part, shard: int, shards: int) -> Part:
    """The rows of `part` that belong to `shard` of `shards`, with their pending gradient."""
    keep = np.flatnonzero(shard_of(part.ids, shards) == shard)  # (m,) the part's rows kept
    table = _fixed(part.table, Path(part.table.name))
    rows, sums, _ = table.pending()
    local = np.full(len(part.ids), -1, dtype=np.int64)
    local[keep] = np.arange(len(keep))
    pending = local[rows] >= 0
    sub = EmbeddingTable(
        table.name, len(keep), table.embedding_dim, table.optimizer,
        dtype=table.dtype.name, init=table.init, seed=table.seed,
        max_staleness=table.max_staleness, weights=table.weights[keep],
        state={name: array[keep] for name, array in table.state.items()},
    )
    sub.step = table.step
    sub.restore_pending(local[rows[pending]], sums[pending], 0)
    return Part(sub, part.ids[keep], shard, shards, 0, None)


def _assemble(name: str, parts: list[Part], budget: MemoryBudget | None, count: int | None,
              labels_from: Part | None = None) -> EmbeddingTable:
    """One table of every part's rows: by table id when `count` (the whole table), else in
    ascending id order (a shard's rows). Labels come from the part that holds them (shard 0)."""
    first = _fixed(parts[0].table, Path(name))
    ids = np.concatenate([part.ids for part in parts])  # (n,)
    if count is not None:  # the whole table: each row goes to its id
        position, size = ids, count
    else:  # a shard's rows: in ascending id order
        position = np.empty(len(ids), dtype=np.int64)  # (n,) row of each concatenated row
        position[np.argsort(ids, kind="stable")] = np.arange(len(ids))
        size = len(ids)
    dim, dtype = first.embedding_dim, first.dtype
    weights = np.zeros((size, dim), dtype=dtype)
    state = {key: np.zeros((size, dim), dtype=dtype) for key in first.state}
    pending_rows, pending_sums, start = [], [], 0
    for part in parts:
        n = len(part.ids)
        where = position[start : start + n]
        fixed = _fixed(part.table, Path(name))
        weights[where] = fixed.weights
        for key in state:
            state[key][where] = fixed.state[key]
        rows, sums, _ = part.table.pending()
        pending_rows.append(where[rows])
        pending_sums.append(sums)
        start += n
    optimizer = make_optimizer(first.optimizer.config())
    table = EmbeddingTable(name, size, dim, optimizer, dtype=dtype.name,
                           init=first.init, seed=first.seed,
                           max_staleness=first.max_staleness, weights=weights, state=state,
                           budget=budget)
    table.step = first.step
    table.restore_pending(np.concatenate(pending_rows), np.concatenate(pending_sums),
                          sum(part.pushes for part in parts))
    source = labels_from or next((part for part in parts if len(part.table.labels)), None)
    if source is not None and len(source.table.labels):
        table.labels.load_json(source.table.labels.to_json(), lambda ids: None)
    return table


__all__ = ["IDS", "SET_META", "SHARD_META", "Part", "is_sharded", "part_files", "part_name",
           "read_part", "read_set_meta", "read_shard", "read_sharded_table", "write_set_meta"]
