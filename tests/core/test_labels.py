"""Labels: the id <-> label map, its refusals (nothing changed), its memory count and snapshots."""

from __future__ import annotations

import gc
import re
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from service.core.errors import BudgetExceeded, InvalidRequest
from service.core.labels import LabelStore
from service.core.optimizers import make_optimizer
from service.core.registry import TableRegistry
from service.core.snapshots import read_table, write_table
from service.core.table import EmbeddingTable


def table(rows: int = 10) -> EmbeddingTable:
    return EmbeddingTable("t", rows, 2, make_optimizer({"kind": "sgd"}), seed=0)


def state(store: LabelStore) -> tuple[list[int], list[str]]:
    ids, labels = store.items()
    return ids.tolist(), labels


def test_set_replace_and_merge() -> None:
    words = table()
    words.labels.set(np.arange(3), ["a", "b", "c"], merge=False, check_ids=words.check_ids)
    assert state(words.labels) == ([0, 1, 2], ["a", "b", "c"])
    assert words.labels.labels_of(np.array([2, 0, 9])) == ["c", "a", None]
    assert words.labels.ids_of(["b", "c"], "positive").tolist() == [1, 2]
    words.labels.set(np.array([5, 1]), ["e", "bb"], merge=True, check_ids=words.check_ids)
    assert state(words.labels) == ([0, 1, 2, 5], ["a", "bb", "c", "e"])
    with pytest.raises(InvalidRequest, match="label 'b' names no row"):
        words.labels.ids_of(["b"], "positive[0]")
    # two rows swap their labels in one request
    words.labels.set(np.array([0, 2]), ["c", "a"], merge=True, check_ids=words.check_ids)
    assert state(words.labels) == ([0, 1, 2, 5], ["c", "bb", "a", "e"])
    words.labels.set(np.array([7]), ["z"], merge=False, check_ids=words.check_ids)
    assert state(words.labels) == ([7], ["z"])
    assert words.info()["labels"] == 1


@pytest.mark.parametrize(("ids", "labels", "merge", "message"), [
    ([0, 1], ["x", "x"], False, "labels[1] repeats label 'x' of labels[0]"),
    ([0, 0], ["x", "y"], False, "ids[1] repeats id 0 of ids[0]"),
    ([4], ["a"], True, "label 'a' already names row 0"),
    ([0, 10], ["x", "y"], False, "ids must be < num_embeddings=10"),
    ([-1], ["x"], False, "ids must be >= 0"),
    ([0], [""], False, "labels[0] must have 1 to 256 characters, got 0"),
    ([0], ["x" * 257], False, "must have 1 to 256 characters, got 257"),
    ([0], [3], False, "labels[0] must be a string, got 3"),
    ([0], ["\ud800"], False, "not valid Unicode"),
    ([0, 1], ["x"], False, "same length, got 2 ids and 1 labels"),
])
def test_refusals_change_nothing(ids: list[int], labels: list[object], merge: bool,
                                 message: str) -> None:
    words = table()
    words.labels.set(np.arange(3), ["a", "b", "c"], merge=False, check_ids=words.check_ids)
    changes, before = words.changes, state(words.labels)
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        words.labels.set(np.array(ids, dtype=np.int64), labels, merge=merge,
                         check_ids=words.check_ids)
    assert state(words.labels) == before
    assert words.changes == changes


def test_a_change_is_counted_for_snapshots() -> None:
    words = table()
    before = words.changes
    words.labels.set(np.arange(2), ["a", "b"], merge=False, check_ids=words.check_ids)
    assert words.changes == before + 1


def test_nbytes_is_what_the_labels_hold() -> None:
    """TableInfo's nbytes grows by the labels' bytes, within 25% of what Python allocated."""
    words = table(200_000)
    empty = words.nbytes
    labels = [f"word-{i:06d}" for i in range(200_000)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        words.labels.set(np.arange(200_000), labels, merge=False, check_ids=words.check_ids)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    counted = words.nbytes - empty
    assert counted == words.labels.nbytes > 0
    # the label strings were made before tracing: add what they hold
    held += sum(map(sys.getsizeof, labels))
    assert 0.75 * held < counted < 1.25 * held, (counted, held)


def test_the_memory_budget_counts_labels() -> None:
    registry = TableRegistry(memory_budget_bytes=2**20, max_tables=2)
    words = registry.create("words", 1000, 4)  # 16 kB of weights
    words.labels.set(np.arange(1000), [f"w{i}" for i in range(1000)], merge=False,
                     check_ids=words.check_ids)
    assert registry.nbytes == words.nbytes > 16_000 + 1000 * 50
    big = registry.create("big", 1000, 200)  # 800 kB: what is left is less than 1000 labels
    with pytest.raises(BudgetExceeded, match="labels of table 'big' refused"):
        big.labels.set(np.arange(1000), [f"long-label-{i:04d}" * 8 for i in range(1000)],
                       merge=False, check_ids=big.check_ids)
    assert len(big.labels) == 0


def test_labels_are_kept_in_a_snapshot(tmp_path: Path) -> None:
    words = table()
    words.labels.set(np.array([9, 0, 4]), ["nine", "zéro", "four four"], merge=False,
                     check_ids=words.check_ids)
    write_table(words, tmp_path / "snap")
    restored = read_table(tmp_path / "snap")
    assert state(restored.labels) == ([0, 4, 9], ["zéro", "four four", "nine"])
    assert restored.nbytes == words.nbytes
    # a table without labels writes no label file and restores without labels
    write_table(table(), tmp_path / "plain")
    assert not (tmp_path / "plain" / "labels.json").exists()
    assert len(read_table(tmp_path / "plain").labels) == 0
