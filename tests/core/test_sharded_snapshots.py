"""A sharded table's snapshot (service.core.sharded_snapshots): the parts of a table, written
shard by shard, read back whole are the table, bit for bit (rows, optimizer state, step, pending
gradient and its push count, labels); read as the parts of another shard count they are the
same rows again; parts that disagree are refused as damaged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.core import InitSpec, SnapshotDamaged, make_optimizer
from service.core.sharded_snapshots import (
    Part,
    part_files,
    part_name,
    read_shard,
    read_sharded_table,
    write_set_meta,
)
from service.core.snapshots import TableWrite, write_table
from service.core.table import EmbeddingTable
from service.sharding import shard_of
from tests.same_table import assert_same_table


def trained() -> EmbeddingTable:
    table = EmbeddingTable("words", 40, 3, make_optimizer({"kind": "adam", "lr": 0.1}),
                           init=InitSpec("uniform"), seed=4)
    rng = np.random.default_rng(0)
    for _ in range(3):
        ids = rng.integers(0, 40, 25)
        table.push(ids, rng.standard_normal((25, 3)))
        table.apply()
    table.push(rng.integers(0, 40, 7), rng.standard_normal((7, 3)))
    table.push(np.array([5, 5]), np.ones((2, 3)))
    table.labels.set(np.array([0, 39]), ["first", "last"], merge=False,
                     check_ids=table.check_ids)
    return table


def write_parts(parts: list[Part], directory: Path, num_embeddings: int) -> Path:
    directory.mkdir()
    for part in parts:
        write = TableWrite(part.table, directory / part_name(part.shard))
        write.capture()
        write.complete(part_files(part.ids, part.shard, part.shards, part.pushes, None))
    write_set_meta(directory, name="words", shards=len(parts), step=parts[0].table.step,
                   num_embeddings=num_embeddings)
    return directory


def assert_same(ours: EmbeddingTable, reference: EmbeddingTable) -> None:
    assert_same_table(ours, reference)
    assert ours.labels.items()[0].tolist() == reference.labels.items()[0].tolist()
    assert ours.labels.items()[1] == reference.labels.items()[1]


@pytest.mark.parametrize(("shards", "again"), [(3, 2), (2, 5), (1, 4)])
def test_parts_read_back_whole_and_resharded(tmp_path: Path, shards: int, again: int) -> None:
    table = trained()
    write_table(table, tmp_path / "single")
    parts = [read_shard(tmp_path / "single", shard, shards) for shard in range(shards)]
    for part in parts:  # each holds exactly its own ids, ascending
        assert (shard_of(part.ids, shards) == part.shard).all()
    assert sorted(np.concatenate([part.ids for part in parts]).tolist()) == list(range(40))
    assert sum(part.pushes for part in parts) == table.pending_gradient.pushes
    sharded = write_parts(parts, tmp_path / "set", 40)
    assert_same(read_sharded_table(sharded), table)
    regrouped = [read_shard(sharded, shard, again) for shard in range(again)]
    assert_same(read_sharded_table(write_parts(regrouped, tmp_path / "again", 40)), table)


def test_parts_at_different_steps_are_damaged(tmp_path: Path) -> None:
    table = trained()
    write_table(table, tmp_path / "single")
    parts = [read_shard(tmp_path / "single", shard, 2) for shard in range(2)]
    parts[1].table.step += 1
    sharded = write_parts(parts, tmp_path / "set", 40)
    with pytest.raises(SnapshotDamaged, match="is at step 4 of 2 shards; cluster.json says "
                                              "step 3 of 2"):
        read_sharded_table(sharded)
