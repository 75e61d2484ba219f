"""Many threads on one table: no pushed gradient is lost, no lookup sees half an apply."""

from __future__ import annotations

import threading

import numpy as np

from service.core import EmbeddingTable, InitSpec, make_optimizer

THREADS, PUSHES, ROWS, DIM = 8, 100, 16, 4


def test_concurrent_pushes_of_overlapping_ids_sum_exactly() -> None:
    table = EmbeddingTable(
        "t", ROWS, DIM, make_optimizer({"kind": "sgd", "lr": 1.0}), dtype="float64",
        init=InitSpec(kind="zeros"),
    )
    rng = np.random.default_rng(1)
    # integer-valued gradients: float64 sums of them are exact in any order
    work = [
        [(rng.integers(0, ROWS, 32), rng.integers(-8, 9, (32, DIM)).astype(np.float64))
         for _ in range(PUSHES)]
        for _ in range(THREADS)
    ]
    expected = np.zeros((ROWS, DIM))
    for pushes in work:
        for ids, grads in pushes:
            np.add.at(expected, ids, grads)
    start = threading.Barrier(THREADS)

    def pusher(pushes: list) -> None:
        start.wait()
        for ids, grads in pushes:
            table.push(ids, grads)

    threads = [threading.Thread(target=pusher, args=(pushes,)) for pushes in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    table.apply()
    np.testing.assert_array_equal(table.weights, -expected)


def test_lookups_never_see_a_half_applied_step() -> None:
    """Every apply adds 1 to every row; a lookup must see all rows at the same count."""
    rows = 20000  # a large apply, so a torn read would have a window
    table = EmbeddingTable(
        "t", rows, DIM, make_optimizer({"kind": "sgd", "lr": 1.0}), dtype="float64",
        init=InitSpec(kind="zeros"),
    )
    all_ids = np.arange(rows)
    minus_one = -np.ones((rows, DIM))
    stop = threading.Event()
    torn: list[np.ndarray] = []

    def reader() -> None:
        while not stop.is_set():
            out, step = table.lookup(all_ids)
            if not (out == step).all():
                torn.append(out)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for thread in readers:
        thread.start()
    for _ in range(30):
        table.push(all_ids, minus_one)
        table.apply()
    stop.set()
    for thread in readers:
        thread.join()
    assert torn == []
    np.testing.assert_array_equal(table.weights, np.full((rows, DIM), 30.0))
