"""One shard on its own (service.cluster.shard, no Ray): its rows are the table's, by id; ids
of other shards are refused as a stale map; refusals name table ids, not the shard's rows;
the two phases of a step set aside, refuse and put back exactly; the idempotency journal is
one instant with the rows in a snapshot and answers a retry after a restore."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.api.errors import IdempotencyKeyReused
from service.cluster.journal import Journal, fingerprint
from service.cluster.placement import Place, TableSpec
from service.cluster.shard import ShardTable
from service.cluster.worker_app import local_push
from service.core.errors import InvalidRequest, ShardMapChanged
from service.core.initializers import InitSpec, initial_weights
from service.core.sharded_snapshots import read_part
from service.sharding import shard_of


def journal() -> Journal:
    return Journal(100, 600.0, 2**20)


def shard_of_table(shard: int, shards: int, **spec: object) -> ShardTable:
    fields = {"name": "t", "num_embeddings": 50, "embedding_dim": 3, "seed": 9, **spec}
    return ShardTable.fresh(TableSpec(**fields), Place(shard, shards, "g"),  # type: ignore
                            journal())


@pytest.mark.parametrize("shards", [1, 2, 3])
@pytest.mark.parametrize(("dtype", "init"), [("float32", {"kind": "normal", "std": 0.5}),
                                             ("float64", {"kind": "uniform", "low": -1.0,
                                                          "high": 2.0})])
def test_each_shard_holds_the_table_s_own_initial_rows(shards: int, dtype: str,
                                                       init: dict[str, object]) -> None:
    whole = initial_weights((50, 3), np.dtype(dtype), InitSpec(**init), 9)  # type: ignore
    seen = []
    for shard in range(shards):
        part = shard_of_table(shard, shards, dtype=dtype, init=init)
        ids = part.ids
        assert (shard_of(ids, shards) == shard).all()
        rows, step = part.lookup(ids)
        np.testing.assert_array_equal(rows, whole[ids])
        seen.extend(ids.tolist())
    assert sorted(seen) == list(range(50))


def test_ids_it_does_not_hold_are_a_stale_map_and_bad_ids_refused_as_ever() -> None:
    shard = shard_of_table(0, 2)
    foreign = int(np.flatnonzero(shard_of(np.arange(50), 2) == 1)[0])
    with pytest.raises(ShardMapChanged, match=f"id {foreign} of table 't' is not held by "
                                              "shard 0 of 2"):
        shard.lookup(np.array([int(shard.ids[0]), foreign]))
    with pytest.raises(InvalidRequest, match="ids must be < num_embeddings=50 of table 't', "
                                             "got 50"):
        shard.lookup(np.array([50]))


def test_an_overflowing_sum_is_refused_naming_the_table_id() -> None:
    shard = shard_of_table(1, 2)
    row = int(shard.ids[-1])  # the shard's last row: its own number is far from its id
    shard.push(np.array([row]), np.full((1, 3), 3e38, np.float32), counted=False, step=None)
    with pytest.raises(InvalidRequest) as refused:
        shard.push(np.array([row]), np.full((1, 3), 3e38, np.float32), counted=False,
                   step=None)
    assert refused.value.detail == (f"grads overflow: the summed gradient of row {row} is not "
                                    "finite in the table's dtype float32")


def test_two_phases_set_aside_refuse_and_put_back() -> None:
    shard = shard_of_table(0, 2, optimizer={"kind": "sgd", "lr": 1.0})
    ids = shard.ids[:4]
    shard.push(ids, np.ones((4, 3)), counted=True, step=None)
    assert shard.seal("a", 1, 1.0, True) == {"rows": 4, "pushes": 1}
    assert shard.table.pending_rows == 0
    shard.abort("a")  # the step called off: the gradient and the push count are back
    assert (shard.table.pending_rows, shard.pushes) == (4, 1)
    shard.table.weights[0] = -3e38
    with pytest.raises(InvalidRequest, match=f"the new weights of row {int(ids[0])} would not "
                                             "be finite"):
        shard.seal("b", 1, 3e38, True)
    assert (shard.table.pending_rows, shard.pushes, shard.prepared) == (4, 1, {})
    shard.table.weights[0] = 0
    shard.seal("c", 1, 1.0, True)
    assert shard.commit("c", 1) == 4 and shard.step == 1
    assert shard.seal("d", 1, 1.0, True) == {"ahead": 1}  # a leader behind is told so


def test_the_journal_is_snapshotted_with_the_rows_and_replays_after_a_restore(
        tmp_path: Path) -> None:
    shard = shard_of_table(0, 1)
    ids, grads = np.array([1, 2]), np.ones((2, 3))
    key = ("POST", "/v1/tables/t/gradients", "k1", "")
    print_ = fingerprint("gradients", b"", "application/x-npy", b"body")
    first, replayed = local_push(shard, ids, grads, None, key, print_)
    assert not replayed
    assert local_push(shard, ids, grads, None, key, print_) == (first, True)
    shard.snapshot_begin(tmp_path / "part")
    shard.snapshot_capture()
    shard.snapshot_complete()
    restored = ShardTable.of_part(shard.spec, shard.place, read_part(tmp_path / "part"),
                                  journal())
    assert restored.table.pending_rows == 2 and restored.pushes == 1
    assert local_push(restored, ids, grads, None, key, print_) == (first, True)
    with pytest.raises(IdempotencyKeyReused):
        local_push(restored, ids, grads, None, key, fingerprint("gradients", b"", "x", b"no"))
    assert restored.table.pending_rows == 2  # nothing pushed twice
