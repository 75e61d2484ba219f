"""The memory budget covers the pending gradient too, not only weights and optimizer state."""

from __future__ import annotations

import numpy as np
import pytest

from service.core import BudgetExceeded, InitSpec, TableRegistry
from service.core.errors import TableExists

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


# -- creation reserves its name and bytes, allocates outside the lock, then publishes ----------
def test_a_table_being_allocated_holds_its_name_and_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """While 't' is being filled (outside the registry's lock) another create of 't' is a
    TableExists, one that would break the budget counting 't' is refused, and a delete or a
    create of something small goes through."""
    import threading

    import service.core.table as table_module

    allocating, release = threading.Event(), threading.Event()
    original = table_module.initial_weights

    def slow(shape, dtype, spec, seed):  # type: ignore[no-untyped-def]
        if shape[0] == 1000:
            allocating.set()
            assert release.wait(60)
        return original(shape, dtype, spec, seed)

    monkeypatch.setattr(table_module, "initial_weights", slow)
    registry = TableRegistry(memory_budget_bytes=1500 * ROW_BYTES, max_tables=4)
    registry.create("small", 10, DIM)
    creating = threading.Thread(target=registry.create, args=("t", 1000, DIM))
    creating.start()
    assert allocating.wait(60)
    try:
        with pytest.raises(TableExists):
            registry.create("t", 10, DIM)
        with pytest.raises(BudgetExceeded, match=f"{1010 * ROW_BYTES} of the memory budget"):
            registry.create("big", 500, DIM)
        registry.delete("small")  # the registry's lock is free
        registry.create("other", 10, DIM)
        assert sorted(table.name for table in registry) == ["other"]  # 't' not published yet
    finally:
        release.set()
        creating.join(60)
    assert sorted(table.name for table in registry) == ["other", "t"]
    assert registry.memory_used_bytes == 1010 * ROW_BYTES


def test_a_failed_allocation_gives_back_its_name_and_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    import service.core.table as table_module

    def out_of_memory(*args: object) -> np.ndarray:
        raise MemoryError("no room")

    registry = TableRegistry(memory_budget_bytes=1000 * ROW_BYTES, max_tables=4)
    monkeypatch.setattr(table_module, "initial_weights", out_of_memory)
    with pytest.raises(MemoryError):
        registry.create("t", 1000, DIM)
    monkeypatch.undo()
    assert registry.memory_used_bytes == 0
    assert registry.create("t", 1000, DIM).name == "t"


class Holder:
    nbytes = 300 * ROW_BYTES


def test_other_memory_holders_count_against_the_budget() -> None:
    registry = TableRegistry(memory_budget_bytes=1000 * ROW_BYTES, max_tables=4)
    registry.add_memory_holder(Holder())
    with pytest.raises(BudgetExceeded, match=f"{300 * ROW_BYTES} of the memory budget"):
        registry.create("t", 800, DIM)
    registry.create("t", 700, DIM)
    assert registry.memory_used_bytes == 1000 * ROW_BYTES
