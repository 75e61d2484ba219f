"""The memory budget covers the pending gradient too, not only weights and optimizer state."""

from __future__ import annotations

import numpy as np
import pytest

from service.core import BudgetExceeded, InitSpec, TableRegistry

DIM = 8
ROW_BYTES = DIM * 4  # float32 weights
PENDING_ROW_BYTES = 8 + DIM * 4  # an int64 row id and a float32 sum


def registry_with_room_for(pending_rows: int) -> TableRegistry:
    weights = 1000 * ROW_BYTES
    return TableRegistry(memory_budget_bytes=weights + pending_rows * PENDING_ROW_BYTES,
                         max_tables=4)


def test_a_push_that_fits_the_budget_is_taken() -> None:
    registry = registry_with_room_for(pending_rows=100)
    table = registry.create("t", 1000, DIM, init=InitSpec(kind="zeros"))
    # 70 rows fit; doubling past 100 would not, so the buffer grows only to what is needed
    table.push(np.arange(64), np.ones((64, DIM), np.float32))
    table.push(np.arange(64, 70), np.ones((6, DIM), np.float32))
    assert table.pending_rows == 70
    assert registry.nbytes <= registry.memory_budget_bytes


def test_a_push_over_the_budget_is_refused_and_changes_nothing() -> None:
    registry = registry_with_room_for(pending_rows=100)
    table = registry.create("t", 1000, DIM, init=InitSpec(kind="zeros"))
    table.push(np.arange(50), np.ones((50, DIM), np.float32))
    rows, sums, pushes = table.pending()
    with pytest.raises(BudgetExceeded, match="push to table 't' refused: its pending gradient"):
        table.push(np.arange(50, 250), np.ones((200, DIM), np.float32))
    after_rows, after_sums, after_pushes = table.pending()
    np.testing.assert_array_equal(after_rows, rows)
    np.testing.assert_array_equal(after_sums, sums)
    assert after_pushes == pushes
    table.apply()  # applying frees the room, after which the push fits
    assert table.push(np.arange(50, 120), np.ones((70, DIM), np.float32)).pending_rows == 70
