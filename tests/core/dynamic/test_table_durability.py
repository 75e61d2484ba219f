"""A dynamic table through its snapshot (continuing bit for bit, admission and eviction order
included; the layout version refused clearly), the memory budget (growth refused with nothing
changed), concurrent pushes of new keys, and initial rows the same in another process."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from service.core.budget import MemoryBudget
from service.core.dynamic import DynamicSpec, DynamicTable
from service.core.dynamic.snapshots import LAYOUT_VERSION
from service.core.errors import BudgetExceeded, SnapshotDamaged
from service.core.initializers import InitSpec
from service.core.optimizers import make_optimizer
from service.core.snapshots import read_table, write_table
from tests.conftest import ROOT


def make(settings: DynamicSpec, budget: MemoryBudget | None = None,
         kind: str = "adam") -> DynamicTable:
    return DynamicTable("users", 6, make_optimizer({"kind": kind, "lr": 0.05}), seed=11,
                        init=InitSpec("uniform", low=-0.5, high=0.5), settings=settings,
                        budget=budget)


def train(table: DynamicTable, rng: np.random.Generator, rounds: int) -> list[list[int]]:
    """Zipf pushes (some asynchronous) and applies; the keys live after each step."""
    live = []
    for _ in range(rounds):
        ids = (rng.zipf(1.2, 16) * 7919).astype(np.int64) - 2**40  # hashed-looking, repeats
        result = table.push(ids, rng.standard_normal((16, 6)).astype(np.float32),
                            apply=bool(rng.random() < 0.3))
        if result.rows_updated or rng.random() < 0.5:
            table.apply()
        live.append(table.export_rows()[0].tolist())
    return live


@pytest.mark.parametrize("settings", [
    DynamicSpec(capacity=20, admit_after=2, evict="lfu", ttl_steps=6, max_candidates=15),
    DynamicSpec(capacity=25, admit_after=1, evict="lru"),
])
def test_a_snapshot_continues_bit_for_bit(tmp_path: Path, settings: DynamicSpec) -> None:
    """Train, snapshot, read back; then train the original and the copy the same way: the
    same rows, optimizer state, live keys after every step (eviction order), dropped counts
    (admission counts, including forgotten candidates) and TableInfo."""
    table = make(settings)
    train(table, np.random.default_rng(1), 40)
    table.labels.set(np.array([5, -9]), ["five", "minus nine"], merge=False,
                     check_ids=table.check_ids)
    table.push(np.array([3, 3, 4]), np.ones((3, 6), np.float32))  # a pending gradient
    write_table(table, tmp_path / "snap")
    copy = read_table(tmp_path / "snap")
    assert isinstance(copy, DynamicTable)
    assert {**copy.info(), "nbytes": 0} == {**table.info(), "nbytes": 0}
    assert copy.labels.items()[1] == ["minus nine", "five"]
    assert train(copy, np.random.default_rng(2), 40) == train(table, np.random.default_rng(2),
                                                               40)
    for side in (table, copy):
        side.push(np.array([3, 10**12]), np.ones((2, 6), np.float32), apply=True)
    assert copy.info()["evicted_rows"] == table.info()["evicted_rows"] > 0
    keys, rows, step = table.export_rows()
    copy_keys, copy_rows, copy_step = copy.export_rows()
    np.testing.assert_array_equal(copy_keys, keys)
    np.testing.assert_array_equal(copy_rows, rows)
    assert copy_step == step


def test_the_snapshot_is_key_sorted_plain_arrays(tmp_path: Path) -> None:
    table = make(DynamicSpec(admit_after=2))
    train(table, np.random.default_rng(5), 20)
    write_table(table, tmp_path / "snap")
    keys = np.load(tmp_path / "snap" / "keys.npy")
    np.testing.assert_array_equal(keys, table.export_rows()[0])
    np.testing.assert_array_equal(np.load(tmp_path / "snap" / "weights.npy"),
                                  table.export_rows()[1])
    meta = json.loads((tmp_path / "snap" / "meta.json").read_text())
    assert (meta["layout_version"], meta["rows"]) == (LAYOUT_VERSION, len(keys))
    candidates = np.load(tmp_path / "snap" / "admission_keys.npy")
    assert (np.diff(candidates) > 0).all() and meta["admission"]["candidates"] == len(candidates)


def test_another_layout_version_is_refused_clearly(tmp_path: Path) -> None:
    write_table(make(DynamicSpec()), tmp_path / "snap")
    meta_path = tmp_path / "snap" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["layout_version"] = LAYOUT_VERSION + 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(SnapshotDamaged, match=(
            f"dynamic-table snapshot of layout version {LAYOUT_VERSION + 1}; this service reads "
            f"layout version {LAYOUT_VERSION} only")):
        read_table(tmp_path / "snap")


def test_unsorted_keys_are_refused_naming_the_file(tmp_path: Path) -> None:
    table = make(DynamicSpec())
    table.push(np.array([1, 2, 3]), np.ones((3, 6), np.float32), apply=True)
    write_table(table, tmp_path / "snap")
    path = tmp_path / "snap" / "keys.npy"
    np.save(path, np.array([3, 2, 1]))  # same size, same shape: only the order is wrong
    with pytest.raises(SnapshotDamaged, match="keys.npy: keys must be distinct and ascending"):
        read_table(tmp_path / "snap")


def test_growth_beyond_the_budget_is_refused_with_nothing_changed() -> None:
    """New keys until the rows or the admission candidates would outgrow the budget: that push
    or apply is a BudgetExceeded, and the table (rows, candidates, pending, info) is as before."""
    budget = MemoryBudget(200_000, lambda: table.nbytes)
    table = make(DynamicSpec(admit_after=2), budget)
    rng = np.random.default_rng(0)

    def state() -> tuple[object, ...]:
        keys, rows, _ = table.export_rows()
        pending_rows, pending_sums, pushes = table.pending()
        return (keys.tobytes(), rows.tobytes(), pending_rows.tobytes(), pending_sums.tobytes(),
                pushes, json.dumps(table.info()), table.capture().admission["keys"].tobytes())

    refused = 0
    for _ in range(200):
        ids = rng.integers(-(2**63), 2**63 - 1, 64, dtype=np.int64)
        for operation in ("push", "push", "apply"):
            before = state()
            table.release()
            try:
                if operation == "push":
                    table.push(ids, np.ones((64, 6), np.float32))
                else:
                    table.apply()
            except BudgetExceeded as error:
                assert "table 'users' refused" in error.detail
                assert state() == before
                table.release()
                refused += 1
            else:
                continue
            break
    assert refused and table.nbytes <= 200_000


def test_eight_threads_pushing_overlapping_new_keys() -> None:
    """Exact sums (integer gradients in float64: no rounding, any order) and no key given two
    rows: every key's row is minus the sum of what all threads pushed for it."""
    table = DynamicTable("users", 2, make_optimizer({"kind": "sgd", "lr": 1.0}),
                         dtype="float64", init=InitSpec("zeros"), settings=DynamicSpec())
    keys = np.arange(-150, 150) * (2**54 + 1)  # 300 keys spread over the int64 range
    expected: dict[int, np.ndarray] = {}
    lock = threading.Lock()

    def trainer(number: int) -> None:
        rng = np.random.default_rng(number)
        for round_number in range(60):
            ids = rng.choice(keys, 40)  # overlapping, repeats within the push
            grads = rng.integers(-5, 6, (40, 2)).astype(np.float64)
            table.push(ids, grads, apply=bool(round_number % 3 == 0))
            with lock:
                for key, grad in zip(ids.tolist(), grads, strict=True):
                    expected[key] = expected.get(key, np.zeros(2)) + grad

    threads = [threading.Thread(target=trainer, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    table.apply()
    got_keys, rows, _ = table.export_rows()
    assert got_keys.tolist() == sorted(expected)  # one row per key, each made once
    assert table.live_rows == len(expected) and table.info()["rows"] == len(expected)
    np.testing.assert_array_equal(rows, [-expected[key] for key in got_keys.tolist()])


def test_initial_rows_are_the_same_in_another_process() -> None:
    """A key's initial row depends on (seed, init, key) only: another process (fresh
    interpreter, other keys first, the other kernel backend) looks up the same bytes."""
    keys = np.array([2**63 - 1, -(2**63), 0, 12345, -1], dtype=np.int64)
    here = make(DynamicSpec()).lookup(keys)[0]
    code = ("import sys, numpy as np; from service.core import kernels; kernels.use('numpy'); "
            "from tests.core.dynamic.test_table_durability import make; "
            "from service.core.dynamic import DynamicSpec; t = make(DynamicSpec()); "
            "t.lookup(np.arange(1000)); "
            f"sys.stdout.buffer.write(t.lookup(np.array({keys.tolist()}))[0].tobytes())")
    there = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                           check=True).stdout
    assert there == here.tobytes()
