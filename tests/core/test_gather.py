"""service.core.gather: W[ids] into a buffer, whole or block by block, against numpy's W[ids];
and EmbeddingTable.lookup's progress, which reports the blocks under the table's lock."""

from __future__ import annotations

import numpy as np
import pytest

from service.core import gather
from service.core.gather import take_rows
from service.core.optimizers import make_optimizer
from service.core.table import EmbeddingTable


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("block_bytes", [1, 40, 1000, 2**20], ids=lambda b: f"block-{b}")
@pytest.mark.parametrize("id_shape", [(0,), (1,), (37,), (5, 9)], ids=str)
def test_blocks_gather_what_numpy_does(
    monkeypatch: pytest.MonkeyPatch, dtype: type, block_bytes: int, id_shape: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(7)
    weights = rng.standard_normal((50, 5)).astype(dtype)  # (V, dim)
    ids = rng.integers(0, 50, id_shape)
    monkeypatch.setattr(gather, "BLOCK_BYTES", block_bytes)
    whole, blocks = np.empty((*id_shape, 5), dtype), np.full((*id_shape, 5), np.nan, dtype)
    take_rows(weights, ids, whole)
    calls: list[tuple[int, int]] = []
    take_rows(weights, ids, blocks, lambda rows, step: calls.append((rows, step)), step=11)
    np.testing.assert_array_equal(whole, weights[ids])
    np.testing.assert_array_equal(blocks, weights[ids])
    per_block = max(1, block_bytes // (5 * np.dtype(dtype).itemsize))
    expected = [min(stop, ids.size) for stop in range(per_block, ids.size + per_block, per_block)]
    assert calls == [(rows, 11) for rows in expected]


def test_lookup_reports_blocks_under_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each progress call comes while the lookup holds the table's lock (a push waits), with
    the rows so far already in `out`, and the step the lookup returns."""
    monkeypatch.setattr(gather, "BLOCK_BYTES", 4 * 4 * 3)  # 3 rows of dim 4 float32 a block
    table = EmbeddingTable("t", 10, 4, make_optimizer({"kind": "sgd", "lr": 1.0}),
                           weights=np.arange(40, dtype=np.float32).reshape(10, 4))
    ids = np.array([9, 0, 3, 3, 7, 1, 2])
    out = np.zeros((7, 4), np.float32)
    seen: list[tuple[int, int, bool, bool]] = []

    def progress(rows: int, step: int) -> None:
        free = table._lock._lock.acquire(blocking=False)
        if free:
            table._lock._lock.release()
        seen.append((rows, step, free, bool(np.array_equal(out[:rows], table.weights[ids[:rows]]))))

    rows, step = table.lookup(ids, out, progress=progress)
    assert rows is out and step == 0
    assert seen == [(3, 0, False, True), (6, 0, False, True), (7, 0, False, True)]
    np.testing.assert_array_equal(out, table.weights[ids])
    assert table._lock._lock.acquire(blocking=False)  # free again once the lookup returns
