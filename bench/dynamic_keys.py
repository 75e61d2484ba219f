"""The building blocks of dynamic tables, measured against peers in the same run.

    .venv/bin/python bench/dynamic_keys.py             # V = 1,000,000 live keys, ~1-2 minutes
    .venv/bin/python bench/dynamic_keys.py --quick     # V = 100,000, a smoke run
    .venv/bin/python bench/dynamic_keys.py --write     # also bench/results/dynamic_keys.md

1. Key index, V live random int64 keys: a lookup of 4096 keys (9 in 10 present), an insert of
   4096 new keys, a delete of 4096 present keys, bytes per key, for each design: the numba
   open-addressing index, the same layout probed by numpy, sorted arrays + searchsorted with
   a sorted delta merged at 64K keys, and a Python dict. Peer: numpy's W[ids] gather of 4096
   rows from a (V, 64) float32 matrix, the fixed table's own lookup.
2. A dynamic lookup in the core: key index + gather of present rows + initial rows of the
   absent ones, against W[ids].
3. Initial rows of 410 keys x 64 (normal, uniform) against numpy's seeded generator.
4. Eviction at V live rows: k rows evicted after a step (lru, lfu, ttl), for several k and
   two table sizes: the cost follows k, not V.
5. Memory per live row of the key index and the eviction bookkeeping, against the 64-byte
   budget of the issue.
Timings are medians; every row prints its ratio to the peer measured right before it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.core.dynamic import EvictionTracker, KeyIndex, initial_rows  # noqa: E402
from service.core.dynamic.admission import AdmissionCounter  # noqa: E402
from service.core.initializers import InitSpec  # noqa: E402

BATCH, DIM = 4096, 64
LINES: list[str] = []


def say(line: str = "") -> None:
    print(line, flush=True)
    LINES.append(line)


def median_us(run: Callable[[], object], repeats: int, setup: Callable[[], object] | None = None,
              after: Callable[[], object] | None = None) -> float:
    """Median of `repeats` timed calls (setup/after untimed, around each)."""
    samples = []
    for _ in range(repeats):
        if setup:
            setup()
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
        if after:
            after()
    return float(np.median(samples)) * 1e6


class SortedIndex:
    """The numpy-only alternative: sorted keys + slots, a small sorted delta of new keys
    merged into the main arrays at DELTA keys, deleted keys marked with slot -1."""

    DELTA = 65536

    def __init__(self, keys: np.ndarray) -> None:
        order = np.argsort(keys)
        self.keys, self.slots = keys[order], order.astype(np.int64)
        self.delta_keys = np.empty(0, np.int64)
        self.delta_slots = np.empty(0, np.int64)
        self.next_slot = keys.size

    @staticmethod
    def _search(sorted_keys: np.ndarray, slots: np.ndarray, keys: np.ndarray) -> np.ndarray:
        if sorted_keys.size == 0:
            return np.full(keys.size, -1, np.int64)
        position = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
        return np.where(sorted_keys[position] == keys, slots[position], -1)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        order = np.argsort(keys)  # sorted needles search faster (cache-friendly)
        sorted_needles = keys[order]
        found = self._search(self.keys, self.slots, sorted_needles)
        missing = found < 0
        found[missing] = self._search(self.delta_keys, self.delta_slots, sorted_needles[missing])
        out = np.empty(keys.size, np.int64)
        out[order] = found
        return out

    def insert(self, keys: np.ndarray) -> None:  # distinct absent keys
        slots = np.arange(self.next_slot, self.next_slot + keys.size)
        self.next_slot += keys.size
        merged_keys = np.concatenate([self.delta_keys, keys])
        order = np.argsort(merged_keys, kind="stable")
        self.delta_keys = merged_keys[order]
        self.delta_slots = np.concatenate([self.delta_slots, slots])[order]
        if self.delta_keys.size >= self.DELTA:
            live = self.slots >= 0
            keys_all = np.concatenate([self.keys[live], self.delta_keys])
            order = np.argsort(keys_all, kind="stable")
            self.keys = keys_all[order]
            self.slots = np.concatenate([self.slots[live], self.delta_slots])[order]
            self.delta_keys, self.delta_slots = self.delta_keys[:0], self.delta_slots[:0]

    def delete(self, keys: np.ndarray) -> None:
        position = np.minimum(np.searchsorted(self.keys, keys), self.keys.size - 1)
        hit = self.keys[position] == keys
        self.slots[position[hit]] = -1

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.slots.nbytes + self.delta_keys.nbytes * 2


def insert_delete_us(index: KeyIndex, fresh_batches: list[np.ndarray], keys: np.ndarray,
                     repeats: int) -> tuple[float, float]:
    """Median times of inserting 4096 new keys (deleted again, untimed) and of deleting 4096
    present keys (inserted again, untimed): V stays the same."""
    inserts, deletes = [], []
    present = np.random.default_rng(5).permutation(keys)[: BATCH * repeats]
    for batch, old in zip(fresh_batches, present.reshape(repeats, BATCH), strict=True):
        start = time.perf_counter()
        index.get_or_insert(batch)
        inserts.append(time.perf_counter() - start)
        index.delete(batch)
        start = time.perf_counter()
        index.delete(old)
        deletes.append(time.perf_counter() - start)
        index.get_or_insert(old)
    return float(np.median(inserts)) * 1e6, float(np.median(deletes)) * 1e6


def median_each(run: Callable[[np.ndarray], object], batches: list[np.ndarray]) -> float:
    """Median time of run(batch) over batches, each batch once: uniform random ids are
    not in cache, as in use; the same batch again would be."""
    samples = []
    for batch in batches:
        start = time.perf_counter()
        run(batch)
        samples.append(time.perf_counter() - start)
    return float(np.median(samples)) * 1e6


def key_index_rows(size: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    keys = rng.integers(-(2**63), 2**63 - 1, size, dtype=np.int64)
    present = rng.random(BATCH) < 0.9  # (4096,) the same mask for every batch
    batches = [np.where(present, keys[rng.integers(0, size, BATCH)],
                        rng.integers(-(2**63), 2**63 - 1, BATCH, dtype=np.int64))
               for _ in range(repeats * 4)]
    queries = batches[0]
    weights = rng.standard_normal((size, DIM), dtype=np.float32)
    id_batches = [rng.integers(0, size, BATCH) for _ in range(repeats * 4)]
    gather = median_each(lambda ids: weights[ids], id_batches)
    say(f"## 1. key index, V = {size:,} live keys, batches of {BATCH}, each batch new")
    say(f"peer: numpy W[ids], {BATCH} random rows of ({size:,}, {DIM}) float32: {gather:.0f} us")
    say("| design | lookup (9/10 present) | vs W[ids] | insert new | delete | bytes/key |")
    say("|---|---|---|---|---|---|")
    fresh_batches = [rng.integers(-(2**63), 2**63 - 1, BATCH, dtype=np.int64)
                     for _ in range(repeats)]
    for name in ("numba", "numpy"):
        index = KeyIndex.from_arrays(keys, backend=name)
        assert (index.lookup(queries) >= 0).tolist() == present.tolist()
        look = median_each(index.lookup, batches)
        insert, delete = insert_delete_us(index, fresh_batches, keys, repeats)
        say(f"| KeyIndex {name} | {look:.0f} us | {gather / look:.2f}x | {insert:.0f} us | "
            f"{delete:.0f} us | {index.nbytes / len(index):.1f} |")
    sorted_index = SortedIndex(keys)
    look = median_each(sorted_index.lookup, batches)
    samples = []
    for batch in fresh_batches * 3:  # enough batches for merges: report the mean too
        start = time.perf_counter()
        sorted_index.insert(batch)
        samples.append(time.perf_counter() - start)
    insert_median, insert_mean = np.median(samples) * 1e6, np.mean(samples) * 1e6
    victims = iter(keys[: BATCH * repeats].reshape(repeats, BATCH))
    delete = median_us(lambda: sorted_index.delete(next(victims)), repeats)
    say(f"| sorted + searchsorted + delta | {look:.0f} us | {gather / look:.2f}x | "
        f"{insert_median:.0f} us (mean {insert_mean:.0f} us with the merges of V) | "
        f"{delete:.0f} us (tombstones) | {sorted_index.nbytes / size:.1f} |")
    table = dict(zip(keys.tolist(), range(size), strict=True))
    look = median_each(lambda batch: np.fromiter((table.get(k, -1) for k in batch.tolist()),
                                                 np.int64, BATCH), batches)
    batch = iter(fresh_batches)
    insert = median_us(lambda: table.update(zip(next(batch).tolist(), range(BATCH),
                                                 strict=True)), repeats)
    victims = iter(keys[: BATCH * repeats].reshape(repeats, BATCH))
    delete = median_us(lambda: [table.pop(k, None) for k in next(victims).tolist()], repeats)
    say(f"| Python dict | {look:.0f} us | {gather / look:.2f}x | {insert:.0f} us | "
        f"{delete:.0f} us | ~100 (CPython objects) |")
    rebuild = median_us(lambda: KeyIndex.from_arrays(keys), 3)
    say(f"\nrebuild of {size:,} keys (growth or restore, numba): {rebuild / 1e3:.0f} ms")
    numba_index = KeyIndex.from_arrays(keys, backend="numba")
    warm_index = median_us(lambda: numba_index.lookup(queries), repeats * 4)
    warm_gather = median_us(lambda: weights[id_batches[0]], repeats * 4)
    say(f"\nthe same batch again (in cache): KeyIndex numba {warm_index:.0f} us, "
        f"W[ids] {warm_gather:.0f} us")
    dynamic_lookup_row(keys, batches, present, weights, gather)


def dynamic_lookup_row(keys: np.ndarray, batches: list[np.ndarray], present: np.ndarray,
                       weights: np.ndarray, gather: float) -> None:
    """What a dynamic table's lookup costs in the core: index, gather, initial rows."""
    index = KeyIndex.from_arrays(keys)
    spec = InitSpec("normal", std=0.01)

    def dynamic_lookup(queries: np.ndarray) -> np.ndarray:
        slots = index.lookup(queries)  # (n,)
        found = slots >= 0
        out = np.empty((queries.size, DIM), np.float32)  # (n, dim)
        out[found] = weights[slots[found]]
        out[~found] = initial_rows(queries[~found], DIM, np.dtype(np.float32), spec, 0)
        return out

    took = median_each(dynamic_lookup, batches)
    say(f"\n## 2. a dynamic lookup in the core ({int(present.sum())} present, "
        f"{int((~present).sum())} absent)")
    say(f"index + gather + initial rows: {took:.0f} us; W[ids]: {gather:.0f} us; "
        f"ratio W[ids] / dynamic = {gather / took:.0%}")


def step_bookkeeping_rows(size: int, repeats: int) -> None:
    """The dynamic table's extra work in a push + apply of 4096 Zipf ids: slots of the distinct
    keys (new ones created), the step recorded, eviction (none here), against the SGD update
    of the same rows in numpy, the fixed table's own apply work."""
    rng = np.random.default_rng(3)
    keys = rng.integers(-(2**63), 2**63 - 1, size, dtype=np.int64)
    weights = rng.standard_normal((size, DIM), dtype=np.float32)
    say(f"\n## 2b. per-step bookkeeping, V = {size:,}, pushes of {BATCH} Zipf ids (1.1)")
    for policy in ("lru", "lfu"):
        index = KeyIndex()
        slots, _ = index.get_or_insert(keys)
        tracker = EvictionTracker(index, policy, capacity=2 * size)  # type: ignore[arg-type]
        tracker.touch(slots, 0)
        ours, peer, distinct = [], [], []
        for step in range(1, repeats * 2 + 1):
            ranks = np.minimum(rng.zipf(1.1, BATCH), size) - 1  # (4096,) a few ranks are hot
            rows = np.unique(keys[(ranks * 2_654_435_761) % size])  # sorted, as a push has them
            sums = rng.standard_normal((rows.size, DIM), dtype=np.float32)
            start = time.perf_counter()
            row_slots, _ = index.get_or_insert(rows)
            tracker.touch(row_slots, step)
            tracker.evict(step)
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            weights[row_slots] -= np.float32(0.1) * sums
            peer.append(time.perf_counter() - start)
            distinct.append(rows.size)
        mine, theirs = np.median(ours) * 1e6, np.median(peer) * 1e6
        say(f"{policy}: slots + touch + evict {mine:.0f} us; numpy SGD of the same "
            f"{int(np.median(distinct))} rows {theirs:.0f} us; ratio {mine / theirs:.2f}x")


def initial_rows_rows(repeats: int) -> None:
    keys = np.arange(410, dtype=np.int64) * 1_000_003
    say("\n## 3. initial rows of 410 keys x 64 (a lookup's absent tenth)")
    for kind in ("normal", "uniform"):
        spec = InitSpec(kind)  # type: ignore[arg-type]
        for dtype in (np.float32, np.float64):
            ours = median_us(lambda s=spec, d=dtype: initial_rows(keys, DIM, np.dtype(d), s, 7),
                             repeats * 4)
            generator = np.random.default_rng(7)
            draw = (generator.standard_normal if kind == "normal" else generator.random)
            peer = median_us(lambda d=dtype, draw=draw: draw((410, DIM), dtype=d), repeats * 4)
            say(f"{kind:8s} {np.dtype(dtype).name}: {ours:.0f} us; numpy Generator "
                f"(stateful, not per key) {peer:.0f} us; ratio {ours / peer:.1f}x")


def evict_us(policy: str, with_ttl: bool, size: int, k: int, repeats: int) -> float:
    """Median time of evict(step) removing k rows out of size + k live rows (or more).

    lru / lfu: `size` rows touched at steps 1-4 (counts 1-4: many lfu ties, broken by key),
    capacity `size`; each round touches k new rows, and evict removes k. ttl (lru policy, no
    capacity, ttl_steps = rounds + 1): groups of k new rows touched at steps 1, 2, ...,
    then the `size` others once; round r evicts after step r + ttl_steps: group r expires."""
    rng = np.random.default_rng(k)
    index = KeyIndex()
    base, _ = index.get_or_insert(rng.integers(-(2**63), 2**63 - 1, size, dtype=np.int64))
    base = base[np.argsort(index.slot_keys[base])]  # key order: touch skips its sort
    if with_ttl:
        tracker = EvictionTracker(index, policy, None, repeats + 1)  # type: ignore[arg-type]
        for step in range(1, repeats + 1):
            tracker.touch(index.get_or_insert(
                rng.integers(-(2**63), 2**63 - 1, k, dtype=np.int64))[0], step)
        tracker.touch(base, repeats + 1)
    else:
        tracker = EvictionTracker(index, policy, size)  # type: ignore[arg-type]
        counts = rng.integers(1, 5, size)
        for count in range(1, 5):
            tracker.touch(base[counts >= count], count)
    samples = []
    for number in range(1, repeats + 1):
        if with_ttl:
            step = number + repeats + 1  # group `number` is now ttl_steps old
        else:
            step = 4 + number
            tracker.touch(index.get_or_insert(
                rng.integers(-(2**63), 2**63 - 1, k, dtype=np.int64))[0], step)
        start = time.perf_counter()
        gone = tracker.evict(step)
        samples.append(time.perf_counter() - start)
        assert gone.size == k, (gone.size, k)
        index.delete(index.slot_keys[gone])
    return float(np.median(samples)) * 1e6


def eviction_rows(sizes: list[int], repeats: int) -> None:
    say("\n## 4. eviction: time of evict(step) for k rows out of V live (median)")
    say("| policy | V | k = 1 | k = 100 | k = 4096 | k = 65536 |")
    say("|---|---|---|---|---|---|")
    for policy, with_ttl in (("lru", False), ("lfu", False), ("lru", True)):
        for size in sizes:
            cells = [f"{evict_us(policy, with_ttl, size, k, repeats):.0f} us"
                     for k in (1, 100, 4096, 65536)]
            label = "ttl" if with_ttl else policy
            say(f"| {label} | {size:,} | " + " | ".join(cells) + " |")


def memory_rows(size: int) -> None:
    rng = np.random.default_rng(2)
    keys = rng.integers(-(2**63), 2**63 - 1, size, dtype=np.int64)
    say(f"\n## 5. memory per live row at V = {size:,} (allocated bytes / live rows)")
    index = KeyIndex()
    slots, _ = index.get_or_insert(keys)  # grown insert by insert, as a table would
    say(f"key index: {index.nbytes / size:.1f} B (buckets {index.bucket_capacity:,}, load "
        f"{size / index.bucket_capacity:.2f}; slot keys 8 B)")
    for policy, ttl in (("lru", None), ("lfu", None), ("lfu", 10)):
        tracker = EvictionTracker(index, policy, ttl_steps=ttl)  # type: ignore[arg-type]
        tracker.touch(slots, 1)
        total = (index.nbytes + tracker.nbytes) / size
        say(f"eviction {policy}{' + ttl' if ttl else ''}: {tracker.nbytes / size:.1f} B; "
            f"index + eviction = {total:.1f} B per row (budget 64 B)")
    counter = AdmissionCounter(admit_after=2, max_candidates=100_000)
    for start in range(0, 400_000, BATCH):
        counter.record(np.arange(start, start + BATCH))
    say(f"admission, cap 100,000 candidates after 400,000 one-off keys: "
        f"{counter.nbytes / 1e6:.1f} MB ({counter.nbytes / len(counter):.0f} B per candidate)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="V = 100,000, fewer repeats")
    parser.add_argument("--write", action="store_true", help="write bench/results/dynamic_keys.md")
    args = parser.parse_args()
    size = 100_000 if args.quick else 1_000_000
    repeats = 5 if args.quick else 15
    with open("/proc/loadavg") as load:
        say(f"# dynamic keys bench, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"load average {load.read().split()[0]}, numpy {np.__version__}")
    key_index_rows(size, repeats)
    step_bookkeeping_rows(size, repeats)
    initial_rows_rows(repeats)
    eviction_rows([size // 10, size], max(3, repeats // 3))
    memory_rows(size)
    if args.write:
        (ROOT / "bench" / "results" / "dynamic_keys.md").write_text("\n".join(LINES) + "\n")


if __name__ == "__main__":
    main()
