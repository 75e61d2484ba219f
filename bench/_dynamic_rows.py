"""Rows 9-12 of bench/compare.py: a dynamic table of V live rows (keys spread over the whole
int64 range) beside the fixed table of the other rows, the sides alternating run by run.

9.  lookup of 4096 ids, 9 in 10 with a row and 1 in 10 without (their initial rows are computed)
    vs the fixed table's 4096 uniform ids: rows/s
10. push of 4096 Zipf keys + apply (SGD) vs the fixed table's push of the same Zipf ranks: rows/s
11. bytes per live row (TableInfo's nbytes / rows: rows, optimizer state, key index, eviction
    bookkeeping) vs the row's vectors and optimizer state + 64 bytes
12. eviction at V live rows, in-process on the core: a step that makes 4096 new rows and so
    evicts 4096 (capacity V) vs the same step at capacity V / 10: the cost follows the rows
    evicted, not the table size (ratio near 1)

The dynamic table is filled as a trainer fills one: pushes of 4096 new keys with apply=true.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from _report import Row
from peers import uniform_ids, zipf_ids

from service.client import EmbeddingClient
from service.core.dynamic import DynamicSpec, DynamicTable
from service.core.optimizers import make_optimizer

DYNAMIC = "bench-dynamic"
BATCH = 4096


def rate(rows: float) -> str:
    return f"{rows / 1e6:.2f} M rows/s"


def distinct_keys(rng: np.random.Generator, count: int) -> np.ndarray:
    keys = np.unique(rng.integers(-(2**63), 2**63 - 1, int(count * 1.01) + 16, dtype=np.int64))
    return rng.permutation(keys)[:count]  # (count,) distinct, in random order


def dynamic_rows(client: EmbeddingClient, fixed: str, lr: float, rng: np.random.Generator,
                 setup: Any, runs: Callable[..., dict[str, float]]) -> tuple[list[Row], list[str]]:
    rows, dim = setup.rows, 64
    keys = distinct_keys(rng, rows + BATCH)
    keys, absent = keys[:rows], keys[rows:]  # absent: never pushed
    client.create_table(DYNAMIC, embedding_dim=dim, optimizer={"kind": "sgd", "lr": lr},
                        dynamic={"capacity": rows, "evict": "lru"})
    zeros = np.zeros((BATCH, dim), np.float32)
    for start in range(0, rows, BATCH):  # rows made by pushes, as in training
        chunk = keys[start : start + BATCH]
        client.push_gradients(DYNAMIC, chunk, zeros[: len(chunk)], apply=True)
    info = client.get_table(DYNAMIC)
    assert info.rows == rows, info
    present = keys[rng.integers(0, rows, BATCH - BATCH // 10)]
    lookup_ids = rng.permutation(np.concatenate([present, absent[: BATCH // 10]]))
    fixed_ids = uniform_ids(rng, rows, BATCH)
    took = runs({"dynamic": lambda: client.lookup(DYNAMIC, lookup_ids),
                 "fixed": lambda: client.lookup(fixed, fixed_ids)},
                setup.calls["4096"], setup.repeats)
    result = [Row(9, "dynamic table: lookup 4096 ids (9 in 10 have a row), rows/s",
                  rate(BATCH / took["dynamic"]), f"fixed table {rate(BATCH / took['fixed'])}",
                  took["fixed"] / took["dynamic"], 0.6)]
    ranks = zipf_ids(rng, rows, BATCH)
    grads = rng.standard_normal((BATCH, dim), dtype=np.float32) * 0.01
    took = runs({"dynamic": lambda: client.push_gradients(DYNAMIC, keys[ranks], grads,
                                                          apply=True),
                 "fixed": lambda: client.push_gradients(fixed, ranks, grads, apply=True)},
                setup.calls["push"], setup.repeats)
    result.append(Row(10, "dynamic table: push 4096 Zipf keys + apply (SGD), rows/s",
                      rate(BATCH / took["dynamic"]), f"fixed table {rate(BATCH / took['fixed'])}",
                      took["fixed"] / took["dynamic"], 0.5))
    info = client.get_table(DYNAMIC)
    per_row = info.nbytes / info.rows
    limit = dim * 4 + 64  # SGD: no optimizer state
    result.append(Row(11, "dynamic table: bytes per live row", f"{per_row:.1f} B",
                      f"vectors + state + 64 B = {limit} B", per_row / limit, 1.0,
                      higher_is_better=False))
    client.delete_table(DYNAMIC)
    notes = [f"rows 9-11: a dynamic table of {rows:,} live rows x {dim} float32, filled by "
             f"{-(-rows // BATCH)} pushes of {BATCH} new keys with apply=true; "
             f"{len(np.unique(ranks))} distinct keys among the 4096 Zipf ones of row 10"]
    row, note = eviction_row(rng, rows, dim, setup, runs)
    return [*result, row], [*notes, note]


def eviction_row(rng: np.random.Generator, rows: int, dim: int, setup: Any,
                 runs: Callable[..., dict[str, float]]) -> tuple[Row, str]:
    """Row 12: in-process steps of 4096 new keys on full tables (lru and lfu)."""
    sides: dict[str, Callable[[], object]] = {}
    for policy in ("lru", "lfu"):
        for size in (rows, rows // 10):
            table = DynamicTable(f"evict-{policy}-{size}", dim,
                                 make_optimizer({"kind": "sgd", "lr": 0.01}),
                                 settings=DynamicSpec(capacity=size, evict=policy))  # type: ignore[arg-type]
            keys = distinct_keys(rng, size)
            table.set_rows(keys, np.zeros((size, dim), np.float32))
            fresh = iter(np.split(distinct_keys(rng, BATCH * 200), 200))
            grads = np.zeros((BATCH, dim), np.float32)

            def step(table: DynamicTable = table, fresh: Any = fresh,
                     grads: np.ndarray = grads) -> object:
                return table.push(next(fresh), grads, apply=True)  # 4096 made, 4096 evicted

            sides[f"{policy}-{size}"] = step
    calls = max(1, min(20, 200 // (2 * setup.repeats + 2) - 1))
    took = runs(sides, calls, setup.repeats)
    ms = {name: f"{seconds * 1e3:.1f} ms" for name, seconds in took.items()}
    row = Row(12, f"eviction at {rows:,} live rows: a step of 4096 new rows, 4096 evicted (lru)",
              ms[f"lru-{rows}"], f"at {rows // 10:,} rows {ms[f'lru-{rows // 10}']}",
              took[f"lru-{rows}"] / took[f"lru-{rows // 10}"], None, higher_is_better=False)
    note = (f"row 12: the same step with lfu: {ms[f'lfu-{rows}']} at {rows:,} rows, "
            f"{ms[f'lfu-{rows // 10}']} at {rows // 10:,} (the step includes making the 4096 "
            "rows and their SGD update; bench/dynamic_keys.py times the eviction alone)")
    return row, note
