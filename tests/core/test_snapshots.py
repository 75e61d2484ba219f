"""One table to a directory and back: bit-identical, consistent while training, damage named."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from service.core.errors import SnapshotDamaged
from service.core.initializers import InitSpec
from service.core.optimizers import OPTIMIZERS, make_optimizer
from service.core.snapshots import read_table, write_table
from service.core.table import EmbeddingTable


def trained_table(
    kind: str = "adam", dtype: str = "float32", *, rows: int = 50, dim: int = 6, seed: int = 0
) -> EmbeddingTable:
    """A table after three applied steps, with a pending gradient of two pushes."""
    table = EmbeddingTable(
        "words", rows, dim, make_optimizer({"kind": kind, "lr": 0.05}), dtype=dtype,
        init=InitSpec("uniform", low=-0.1, high=0.1), seed=seed, max_staleness=7,
    )
    rng = np.random.default_rng(seed)
    for _ in range(3):
        train_step(table, rng)
    for _ in range(2):
        ids = rng.integers(0, rows, 15)
        table.push(ids, rng.standard_normal((15, dim)))
    return table


def train_step(
    table: EmbeddingTable, rng: np.random.Generator, ids: np.ndarray | None = None
) -> None:
    if ids is None:
        ids = rng.integers(0, table.num_embeddings, 20)
    table.push(ids, rng.standard_normal((len(ids), table.embedding_dim)), apply=True)


def pending_by_row(table: EmbeddingTable) -> tuple[np.ndarray, np.ndarray, int]:
    rows, sums, pushes = table.pending()
    order = np.argsort(rows)
    return rows[order], sums[order], pushes


def assert_same_table(restored: EmbeddingTable, original: EmbeddingTable) -> None:
    """Equal to the bit: weights, every optimizer state array, step, pending gradient, settings."""
    def described(table: EmbeddingTable) -> dict[str, object]:
        return {k: v for k, v in table.info().items() if k != "nbytes"}  # nbytes: + capacity

    assert described(restored) == described(original)
    assert restored.weights.dtype == original.weights.dtype
    assert restored.weights.tobytes() == original.weights.tobytes()
    assert sorted(restored.state) == sorted(original.state)
    for name, array in original.state.items():
        assert restored.state[name].tobytes() == array.tobytes(), name
    rows, sums, pushes = pending_by_row(restored)
    expected_rows, expected_sums, expected_pushes = pending_by_row(original)
    np.testing.assert_array_equal(rows, expected_rows)
    assert sums.tobytes() == expected_sums.tobytes()
    assert pushes == expected_pushes


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_a_table_comes_back_bit_identical(tmp_path: Path, kind: str, dtype: str) -> None:
    table = trained_table(kind, dtype)
    assert table.pending_rows > 0 and table.step == 3

    written = write_table(table, tmp_path / "snap")
    restored = read_table(tmp_path / "snap")

    assert_same_table(restored, table)
    assert (written.name, written.step) == ("words", 3)
    assert written.bytes == sum(p.stat().st_size for p in (tmp_path / "snap").iterdir())


def test_a_restored_table_trains_on_exactly_like_the_original(tmp_path: Path) -> None:
    table = trained_table("adam")
    write_table(table, tmp_path / "snap")
    restored = read_table(tmp_path / "snap")

    for twin in (table, restored):  # the pending gradient, then more steps, with adam's moments
        twin.apply(average=True)
        rng = np.random.default_rng(42)
        for _ in range(3):
            train_step(twin, rng)
    assert restored.weights.tobytes() == table.weights.tobytes()
    assert restored.state["exp_avg_sq"].tobytes() == table.state["exp_avg_sq"].tobytes()


def test_the_files_are_plain_numpy_and_json(tmp_path: Path) -> None:
    table = trained_table("adam")
    write_table(table, tmp_path / "snap")
    files = sorted(p.name for p in (tmp_path / "snap").iterdir())
    assert files == ["meta.json", "pending_rows.npy", "pending_sums.npy",
                     "state.exp_avg.npy", "state.exp_avg_sq.npy", "weights.npy"]

    np.testing.assert_array_equal(np.load(tmp_path / "snap" / "weights.npy"), table.weights)
    np.testing.assert_array_equal(np.load(tmp_path / "snap" / "state.exp_avg.npy"),
                                  table.state["exp_avg"])
    rows, _, _ = pending_by_row(table)
    np.testing.assert_array_equal(np.sort(np.load(tmp_path / "snap" / "pending_rows.npy")), rows)
    meta = json.loads((tmp_path / "snap" / "meta.json").read_text())
    assert {k: meta[k] for k in ("name", "num_embeddings", "embedding_dim", "dtype", "seed",
                                 "max_staleness", "step", "pushes_since_apply", "format_version")} \
        == {"name": "words", "num_embeddings": 50, "embedding_dim": 6, "dtype": "float32",
            "seed": 0, "max_staleness": 7, "step": 3, "pushes_since_apply": 2, "format_version": 1}
    assert meta["optimizer"] == table.optimizer.config()
    assert meta["init"] == {"kind": "uniform", "low": -0.1, "high": 0.1}
    assert meta["files"]["weights.npy"] == (tmp_path / "snap" / "weights.npy").stat().st_size


def test_a_write_while_training_runs_is_the_table_at_one_instant(tmp_path: Path) -> None:
    """Steps land between chunks, on rows already written and rows not yet written: the files
    must hold the table exactly as it is when the write ends (rows rewritten under the lock)."""
    table = trained_table("adam", rows=1000, dim=8)
    rng = np.random.default_rng(7)
    chunks = []

    def train_between_chunks(nbytes: int) -> None:
        chunks.append(nbytes)
        train_step(table, rng, ids=np.array([0, 1, 500, 999, len(chunks)]))  # row 0: written
        table.push(np.array([3]), np.ones((1, 8)))  # the pending gradient changes too

    write_table(table, tmp_path / "snap", chunk_bytes=100 * 8 * 4,
                after_chunk=train_between_chunks)
    restored = read_table(tmp_path / "snap")

    assert len(chunks) == 30  # 10 chunks of weights, 10 of each adam moment
    assert table.step == 3 + 30
    assert_same_table(restored, table)


def test_weights_replaced_during_a_write_are_the_ones_written(tmp_path: Path) -> None:
    table = trained_table("momentum", rows=300, dim=4)
    replacement = np.arange(1200, dtype=np.float32).reshape(300, 4)

    def replace_once(nbytes: int) -> None:
        if table.weights is not replacement:
            table.replace_weights(replacement)

    write_table(table, tmp_path / "snap", chunk_bytes=64 * 4 * 4, after_chunk=replace_once)
    restored = read_table(tmp_path / "snap")

    assert restored.weights.tobytes() == replacement.tobytes()
    assert restored.pending_rows == 0  # replace_weights drops the pending gradient
    assert_same_table(restored, table)


def test_a_write_needs_little_memory_beyond_the_table(tmp_path: Path) -> None:
    """No second copy of the table: well under the 1.5x-the-table's-bytes bound."""
    table = trained_table("adam", rows=4000, dim=256)  # 12 MB of weights and moments
    rng = np.random.default_rng(1)
    tracemalloc.start()
    try:
        write_table(table, tmp_path / "snap", chunk_bytes=2**20,
                    after_chunk=lambda nbytes: train_step(table, rng))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.25 * table.nbytes
    assert_same_table(read_table(tmp_path / "snap"), table)


# -- damage is named ---------------------------------------------------------------------------
@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    write_table(trained_table("adam"), tmp_path / "snap")
    return tmp_path / "snap"


def test_a_truncated_file_is_named(snapshot: Path) -> None:
    weights = snapshot / "weights.npy"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(SnapshotDamaged, match="truncated") as caught:
        read_table(snapshot)
    assert caught.value.path == str(weights)


def test_a_file_cut_to_match_an_edited_meta_is_still_refused(snapshot: Path) -> None:
    weights = snapshot / "weights.npy"
    weights.write_bytes(weights.read_bytes()[:-100])
    meta = json.loads((snapshot / "meta.json").read_text())
    meta["files"]["weights.npy"] -= 100
    (snapshot / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SnapshotDamaged, match="is not a readable .npy") as caught:
        read_table(snapshot)
    assert caught.value.path == str(weights)


@pytest.mark.parametrize(
    ("damage", "file", "message"),
    [
        (lambda d: (d / "meta.json").write_text("{\"format\": "), "meta.json", "JSON"),
        (lambda d: (d / "meta.json").unlink(), "meta.json", "cannot be read"),
        (lambda d: (d / "state.exp_avg_sq.npy").unlink(), "state.exp_avg_sq.npy", "missing"),
        (lambda d: _edit_meta(d, dtype="int8"), "meta.json", "int8"),
        (lambda d: _edit_meta(d, num_embeddings=49), "weights.npy", r"meta.json says \[49, 6\]"),
        (lambda d: _edit_meta(d, optimizer={"kind": "adam", "lr": -1}), "meta.json", "lr"),
        (lambda d: _edit_meta(d, format_version=99), "meta.json", "version 99"),
        (lambda d: _edit_meta(d, step=-1), "meta.json", "step"),
        (lambda d: _replace_npy(d, "pending_rows.npy", np.full(4, 50)), "pending_rows.npy",
         "distinct and in"),
    ],
    ids=["bad-json", "no-meta", "no-state-file", "bad-dtype", "bad-shape", "bad-optimizer",
         "future-format", "negative-step", "rows-out-of-range"],
)
def test_damage_is_refused_naming_the_file(snapshot: Path, damage, file: str, message: str) -> None:
    damage(snapshot)
    with pytest.raises(SnapshotDamaged, match=message) as caught:
        read_table(snapshot)
    assert caught.value.path == str(snapshot / file)
    assert str(snapshot / file) in caught.value.detail


def _edit_meta(directory: Path, **fields: object) -> None:
    meta = json.loads((directory / "meta.json").read_text())
    meta.update(fields)
    (directory / "meta.json").write_text(json.dumps(meta))


def _replace_npy(directory: Path, name: str, array: np.ndarray) -> None:
    """Replace a file and its recorded size and count (damage that size checks cannot see)."""
    np.save(directory / name, array.astype(np.int64))
    meta = json.loads((directory / "meta.json").read_text())
    meta["files"][name] = (directory / name).stat().st_size
    meta["pending_rows"] = len(array)
    (directory / "meta.json").write_text(json.dumps(meta))
    sums = np.zeros((len(array), meta["embedding_dim"]), dtype=np.float32)
    np.save(directory / "pending_sums.npy", sums)
    meta["files"]["pending_sums.npy"] = (directory / "pending_sums.npy").stat().st_size
    (directory / "meta.json").write_text(json.dumps(meta))
