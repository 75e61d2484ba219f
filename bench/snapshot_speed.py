"""How fast are snapshots and restores, next to numpy's own np.save / np.load on the same disk?

    .venv/bin/python bench/snapshot_speed.py                       # 10^7 x 64 float32 (2.56 GB)
    .venv/bin/python bench/snapshot_speed.py --rows 1000000 --dir /data

Needs about 6 GB of memory and 5.2 GB of disk under --dir (default: a temporary directory
under the repo, removed at the end). One sgd table (weights only) of --rows x 64 float32:

- raw save:   np.save(path, weights), then fsync (a snapshot fsyncs, or it is not crash-safe;
              both figures are printed, np.save alone measures the page cache, not the disk)
- snapshot:   SnapshotStore.snapshot (write, rewrite of rows changed meanwhile, fsync, commit)
- raw load:   np.load(path), the file's pages dropped from the page cache first (fadvise)
- restore:    SnapshotStore.restore_into, the same cold start
While the snapshot runs, a thread keeps looking up 4096 random rows of the table being written
and reports the slowest lookup (the table's lock is not held for the write) and the memory the
process gained (peak RSS minus RSS before: the snapshot makes no second copy). Target: snapshot
and restore at >= 70% of the raw rates.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.core import EmbeddingTable, SnapshotStore, TableRegistry, make_optimizer  # noqa: E402
from service.core.snapshots import fsync_path  # noqa: E402

DIM = 64
MB = 1e6


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def drop_from_page_cache(directory: Path) -> None:
    """Cold reads: evict every file under `directory` from the page cache (written data is
    fsynced first, so the pages are clean and can go)."""
    for path in directory.rglob("*"):
        if path.is_file():
            descriptor = os.open(path, os.O_RDONLY)
            try:
                os.fsync(descriptor)
                os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(descriptor)


class Watcher(threading.Thread):
    """Looks rows of the table up while a snapshot runs; samples RSS."""

    def __init__(self, table: EmbeddingTable) -> None:
        super().__init__(daemon=True)
        self.table = table
        self.stop = threading.Event()
        self.slowest = 0.0
        self.lookups = 0
        self.peak_rss = rss_bytes()

    def run(self) -> None:
        rng = np.random.default_rng(0)
        while not self.stop.is_set():
            ids = rng.integers(0, self.table.num_embeddings, 4096)
            started = time.perf_counter()
            self.table.lookup(ids)
            self.slowest = max(self.slowest, time.perf_counter() - started)
            self.lookups += 1
            self.peak_rss = max(self.peak_rss, rss_bytes())
            time.sleep(0.002)


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def report(label: str, nbytes: int, seconds: list[float]) -> float:
    """Print best and median MB/s; return the median seconds."""
    best, median = min(seconds), statistics.median(seconds)
    print(f"  {label:<22} best {nbytes / best / MB:6.0f} MB/s   median {nbytes / median / MB:6.0f}"
          f" MB/s   ({', '.join(f'{s:.2f}' for s in seconds)} s)")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10**7)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=ROOT, help="where the files go (a temporary "
                        "directory is made under it and removed)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="snapshot-bench-", dir=args.dir))
    try:
        run(args.rows, args.rounds, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(rows: int, rounds: int, work: Path) -> None:
    weights = np.random.default_rng(0).standard_normal((rows, DIM), dtype=np.float32)
    nbytes = weights.nbytes
    print(f"table {rows} x {DIM} float32 = {nbytes / MB:.0f} MB; files under {work}; "
          f"{rounds} rounds, the two sides alternating")
    raw = work / "raw.npy"
    registry = TableRegistry(memory_budget_bytes=4 * nbytes, max_tables=2)
    table = EmbeddingTable("bench", rows, DIM, make_optimizer({"kind": "sgd"}), weights=weights,
                           budget=registry.budget)
    registry.add(table)

    def raw_save() -> None:
        raw.unlink(missing_ok=True)
        np.save(raw, weights)
        fsync_path(raw)

    def raw_save_unsynced() -> None:
        raw.unlink(missing_ok=True)
        np.save(raw, weights)

    def snapshot() -> None:
        shutil.rmtree(work / "data", ignore_errors=True)
        store = SnapshotStore(work / "data")
        store.open()
        store.snapshot(registry)

    print("write")
    times: dict[str, list[float]] = {"np.save": [], "np.save + fsync": [], "snapshot": []}
    for round_ in range(rounds):
        order = ["np.save", "np.save + fsync", "snapshot"]
        for label in order if round_ % 2 == 0 else order[::-1]:
            action = {"np.save": raw_save_unsynced, "np.save + fsync": raw_save,
                      "snapshot": snapshot}[label]
            times[label].append(timed(action))
            drop_from_page_cache(work)
    unsynced = report("np.save (no fsync)", nbytes, times["np.save"])
    synced = report("np.save + fsync", nbytes, times["np.save + fsync"])
    written = report("snapshot (fsynced)", nbytes, times["snapshot"])
    print(f"  snapshot / (np.save + fsync) = {synced / written:.0%} (medians); "
          f"/ np.save without fsync = {unsynced / written:.0%}")

    print("read (cold: the files dropped from the page cache before each read)")
    loads: dict[str, list[float]] = {"np.load": [], "restore": []}

    def raw_load() -> None:
        assert np.load(raw).shape == weights.shape

    def restore() -> None:
        again = TableRegistry(memory_budget_bytes=4 * nbytes, max_tables=2)
        store = SnapshotStore(work / "data")
        store.open()
        store.restore_into(again)
        assert again.get("bench").num_embeddings == rows

    for round_ in range(rounds):
        order = ["np.load", "restore"]
        for label in order if round_ % 2 == 0 else order[::-1]:
            drop_from_page_cache(work)
            loads[label].append(timed(raw_load if label == "np.load" else restore))
            gc.collect()
    loaded = report("np.load", nbytes, loads["np.load"])
    restored = report("restore", nbytes, loads["restore"])
    print(f"  restore / np.load = {loaded / restored:.0%} (medians)")

    print("a snapshot while a thread keeps looking up 4096 random rows of the same table")
    idle = Watcher(table)  # the same lookups without a snapshot, for comparison
    idle.start()
    time.sleep(3.0)
    idle.stop.set()
    idle.join()
    watcher = Watcher(table)
    rss_before = rss_bytes()
    watcher.start()
    seconds = timed(snapshot)
    watcher.stop.set()
    watcher.join()
    print(f"  snapshot {nbytes / seconds / MB:.0f} MB/s; {watcher.lookups} lookups served, "
          f"slowest {watcher.slowest * 1e3:.1f} ms (without a snapshot: "
          f"{idle.slowest * 1e3:.1f} ms); process memory +"
          f"{(watcher.peak_rss - rss_before) / MB:.0f} MB over the {rss_before / MB:.0f} MB "
          "before")


if __name__ == "__main__":
    main()
