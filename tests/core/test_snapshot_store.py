"""The data directory: atomic commits, crashes at every step, deletions, damage, skips."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import service.core.snapshot_store as snapshot_store
from service.core.errors import SnapshotDamaged, StorageError
from service.core.registry import TableRegistry
from service.core.snapshot_store import SnapshotStore
from service.core.snapshots import WrittenTable
from service.core.table import EmbeddingTable
from tests.core.test_snapshots import assert_same_table, train_step


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no cleanup (not an Exception)."""


def new_registry() -> TableRegistry:
    return TableRegistry(memory_budget_bytes=2**30, max_tables=10)


def trained_registry() -> TableRegistry:
    registry = new_registry()
    rng = np.random.default_rng(0)
    for name, kind in (("words", "adam"), ("tags", "sgd")):
        table = registry.create(name, 40, 4, seed=1, optimizer={"kind": kind})
        train_step(table, rng)
        table.push(np.array([1, 2, 2]), np.ones((3, 4)))
    return registry


def restored(data_dir: Path, **options: bool) -> TableRegistry:
    """What a restart sees: a new store on the same directory, opened and restored."""
    registry = new_registry()
    store = SnapshotStore(data_dir)
    store.open()
    store.restore_into(registry, **options)
    return registry


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_a_snapshot_restores_every_table(tmp_path: Path) -> None:
    registry = trained_registry()
    store = SnapshotStore(tmp_path)
    store.open()
    report = store.snapshot(registry)

    assert sorted(t.name for t in report.written) == ["tags", "words"]
    assert report.bytes == sum(t.bytes for t in report.written) > 0
    again = restored(tmp_path)
    assert sorted(t.name for t in again) == ["tags", "words"]
    for table in registry:
        assert_same_table(again.get(table.name), table)


def test_only_changed_tables_are_written_again_and_old_snapshots_go(tmp_path: Path) -> None:
    registry = trained_registry()
    store = SnapshotStore(tmp_path)
    store.open()
    store.snapshot(registry)
    first = (tmp_path / "tables" / "words" / "CURRENT").read_text().strip()

    report = store.snapshot(registry)
    assert (report.written, sorted(report.unchanged)) == ([], ["tags", "words"])

    registry.get("words").apply()
    report = store.snapshot(registry)
    assert ([t.name for t in report.written], report.unchanged) == (["words"], ["tags"])
    current = (tmp_path / "tables" / "words" / "CURRENT").read_text().strip()
    assert current != first
    assert entries(tmp_path / "tables" / "words") == ["CURRENT", current]
    assert entries(tmp_path / "tmp") == []


def test_a_restored_table_is_not_rewritten_until_it_changes(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.open()
    store.snapshot(trained_registry())

    registry = new_registry()
    store = SnapshotStore(tmp_path)
    store.open()
    store.restore_into(registry)
    assert store.snapshot(registry).written == []
    registry.get("tags").push(np.array([0]), np.ones((1, 4)))
    assert [t.name for t in store.snapshot(registry).written] == ["tags"]


def with_hook(monkeypatch: pytest.MonkeyPatch, after_chunk: Callable[[int], None]) -> None:
    """Make the store's writes call after_chunk after every chunk."""
    write_table = snapshot_store.write_table

    def write(table: EmbeddingTable, directory: Path, **options: Any) -> WrittenTable:
        return write_table(table, directory, **{**options, "after_chunk": after_chunk})

    monkeypatch.setattr(snapshot_store, "write_table", write)


def committed_then(tmp_path: Path) -> tuple[TableRegistry, SnapshotStore, bytes]:
    """A committed snapshot, then a change; returns the committed weights of 'words'."""
    registry = trained_registry()
    store = SnapshotStore(tmp_path, chunk_bytes=64)
    store.open()
    store.snapshot(registry)
    committed = registry.get("words").weights.tobytes()
    registry.get("words").apply()
    return registry, store, committed


def test_a_kill_in_the_middle_of_a_write_leaves_the_previous_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, store, committed = committed_then(tmp_path)
    calls = []

    def killed_after_a_few_chunks(nbytes: int) -> None:
        calls.append(nbytes)
        if len(calls) == 3:
            raise Killed

    with_hook(monkeypatch, killed_after_a_few_chunks)
    with pytest.raises(Killed):
        store.snapshot(registry)
    assert len(entries(tmp_path / "tmp")) == 1  # the half-written snapshot

    monkeypatch.undo()
    again = restored(tmp_path)
    assert again.get("words").weights.tobytes() == committed
    assert entries(tmp_path / "tmp") == []  # removed at start


@pytest.mark.parametrize("first_snapshot", [False, True])
def test_a_kill_between_rename_and_commit_leaves_the_previous_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first_snapshot: bool
) -> None:
    if first_snapshot:
        registry, store = trained_registry(), SnapshotStore(tmp_path)
        store.open()
    else:
        registry, store, committed = committed_then(tmp_path)

    def killed(*args: object) -> None:
        raise Killed

    monkeypatch.setattr(snapshot_store.os, "replace", killed)  # the CURRENT swap
    with pytest.raises(Killed):
        store.snapshot(registry)
    monkeypatch.undo()
    table_dir = tmp_path / "tables" / "words"
    assert len([p for p in table_dir.iterdir() if p.name.startswith("snap-")]) == (
        1 if first_snapshot else 2)

    again = restored(tmp_path)
    if first_snapshot:  # never committed: as if it had not been written
        assert len(again) == 0
        assert not table_dir.exists()
    else:
        assert again.get("words").weights.tobytes() == committed
        assert len(entries(table_dir)) == 2  # CURRENT and the committed snapshot


def test_a_deleted_table_does_not_come_back(tmp_path: Path) -> None:
    registry = trained_registry()
    store = SnapshotStore(tmp_path)
    store.open()
    store.snapshot(registry)

    store.delete_table(registry, "words")

    assert [t.name for t in registry] == ["tags"]
    assert [t.name for t in restored(tmp_path)] == ["tags"]
    assert entries(tmp_path / "tables") == ["tags"]
    assert entries(tmp_path / "trash") == []


def test_a_table_deleted_while_it_is_written_is_not_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = trained_registry()
    store = SnapshotStore(tmp_path, chunk_bytes=64)
    store.open()

    def delete_words_once(nbytes: int) -> None:
        if "words" in [t.name for t in registry]:
            store.delete_table(registry, "words")

    with_hook(monkeypatch, delete_words_once)
    report = store.snapshot(registry)

    assert [t.name for t in report.written] == ["tags"]
    assert entries(tmp_path / "tables") == ["tags"]
    assert entries(tmp_path / "tmp") == []


def test_a_new_table_under_a_deleted_name_is_written_again(tmp_path: Path) -> None:
    registry = trained_registry()
    store = SnapshotStore(tmp_path)
    store.open()
    store.snapshot(registry)
    store.delete_table(registry, "tags")
    table = registry.create("tags", 3, 2, init=None)

    assert [t.name for t in store.snapshot(registry).written] == ["tags"]
    assert_same_table(restored(tmp_path).get("tags"), table)


def damage_words(tmp_path: Path) -> Path:
    store = SnapshotStore(tmp_path)
    store.open()
    store.snapshot(trained_registry())
    table_dir = tmp_path / "tables" / "words"
    weights = table_dir / (table_dir / "CURRENT").read_text().strip() / "weights.npy"
    with open(weights, "r+b") as file:
        file.truncate(weights.stat().st_size - 1)
    return weights


def test_a_damaged_snapshot_stops_the_restore_naming_the_file(tmp_path: Path) -> None:
    weights = damage_words(tmp_path)
    with pytest.raises(SnapshotDamaged) as caught:
        restored(tmp_path)
    assert caught.value.path == str(weights)
    assert weights.exists()  # nothing is removed


def test_skip_damaged_restores_the_rest_and_sets_the_damage_aside(tmp_path: Path) -> None:
    weights = damage_words(tmp_path)
    registry = new_registry()
    store = SnapshotStore(tmp_path)
    store.open()
    report = store.restore_into(registry, skip_damaged=True)

    assert [t.name for t in registry] == report.restored == ["tags"]
    [(reason, moved_to)] = report.skipped
    assert str(weights) in reason
    assert moved_to.parent == tmp_path / "damaged" and moved_to.name.startswith("words-")
    assert entries(tmp_path / "tables") == ["tags"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "CURRENT").write_text("snap-gone\n"), "'snap-gone', which does not exist"),
        (lambda d: (d / "CURRENT").write_text("../tags\n"), "does not exist"),
        (lambda d: os.rename(d, d.parent / "not a name"), "name must be"),
    ],
    ids=["dangling-pointer", "pointer-outside", "bad-directory-name"],
)
def test_a_bad_pointer_or_directory_is_damage(tmp_path: Path, damage, message: str) -> None:
    store = SnapshotStore(tmp_path)
    store.open()
    store.snapshot(trained_registry())
    damage(tmp_path / "tables" / "words")
    with pytest.raises(SnapshotDamaged, match=message):
        restored(tmp_path)


def test_a_disk_that_refuses_is_a_storage_error(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.open()
    (tmp_path / "tmp").rmdir()
    (tmp_path / "tmp").write_text("not a directory")
    with pytest.raises(StorageError, match="could not be written to"):
        store.snapshot(trained_registry())


def test_an_unusable_data_dir_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError, match=f"data_dir {tmp_path / 'file' / 'data'} cannot"):
        SnapshotStore(tmp_path / "file" / "data").open()


def test_the_throttle_sleeps_to_keep_the_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    now, slept = [100.0], []
    monkeypatch.setattr(snapshot_store.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(snapshot_store.time, "sleep", slept.append)
    throttle = SnapshotStore(Path("unused"), max_bytes_per_second=1000)._throttle()
    assert throttle is not None
    throttle(500)
    now[0] += 2.0  # slower than the rate already: no sleep
    throttle(500)
    throttle(3000)
    assert slept == [0.5, 2.0]
    assert SnapshotStore(Path("unused"))._throttle() is None


# -- one process per data directory ----------------------------------------------------------
LOCK_HOLDER = """
import sys, time
from pathlib import Path
from service.core.snapshot_store import SnapshotStore
store = SnapshotStore(Path(sys.argv[1]))
store.open()
print("open", flush=True)
time.sleep(600)
"""


def test_a_second_process_cannot_open_the_data_directory(tmp_path: Path) -> None:
    """Another process holds data_dir (its snapshot in the middle of being written in tmp/):
    opening it here is refused, naming the directory and that process, and removes nothing."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        in_flight = tmp_path / "tmp" / "words.1234"
        in_flight.mkdir()
        with pytest.raises(StorageError) as refused:
            SnapshotStore(tmp_path).open()
        assert refused.value.detail == (
            f"data_dir {tmp_path} is in use by another process (pid {holder.pid}); two "
            "services on one data directory would overwrite each other's snapshots"
        )
        assert in_flight.is_dir()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()  # type: ignore[union-attr]
    assert SnapshotStore(tmp_path).open() == [in_flight]  # the holder is gone: leftovers go


def opens_in_another_process(data_dir: Path) -> str:
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from service.core.snapshot_store import "
            "SnapshotStore; from service.core.errors import StorageError\n"
            "try:\n    SnapshotStore(Path(sys.argv[1])).open(); print('opened')\n"
            "except StorageError: print('refused')")
    done = subprocess.run([sys.executable, "-c", code, str(data_dir)], capture_output=True,
                          text=True, check=True, timeout=120)
    return done.stdout.strip()


def test_stores_of_one_process_share_the_directory(tmp_path: Path) -> None:
    """A restart simulated in one process (a second store on the same directory) is allowed;
    the directory stays locked against other processes until the last store of this one
    closes."""
    first, second = SnapshotStore(tmp_path), SnapshotStore(tmp_path)
    first.open()
    second.open()
    first.close()
    assert opens_in_another_process(tmp_path) == "refused"
    second.close()
    assert opens_in_another_process(tmp_path) == "opened"
