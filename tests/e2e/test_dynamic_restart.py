"""A dynamic table through a restart of a real uvicorn: trained from the SDK with hashed ids,
snapshotted, the service stopped (SIGTERM) and started again on the same data directory, then
trained on; an uninterrupted service given the same calls must agree at every step: push and
apply replies (dropped rows: admission counts came back), TableInfo (rows, evictions), the
exported rows (eviction order came back), and the initial rows of keys never trained."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.client import EmbeddingClient, KeyedWeights
from tests.conftest import LiveServer

pytestmark = pytest.mark.e2e

SETTINGS = {"capacity": 60, "admit_after": 2, "evict": "lfu", "ttl_steps": 12,
            "max_candidates": 40}


def calls(seed: int, rounds: int) -> Iterator[tuple[np.ndarray, np.ndarray, bool]]:
    """Pushes of hashed 64-bit ids (uint64 and int64 alike), Zipf-distributed."""
    rng = np.random.default_rng(seed)
    for number in range(rounds):
        raw = rng.zipf(1.3, 24).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # wraps
        ids = raw if number % 2 else raw.view(np.int64)
        yield ids, rng.standard_normal((24, 8)).astype(np.float32), number % 5 == 0


def train(client: EmbeddingClient, seed: int, rounds: int) -> list[Any]:
    """Every reply and, after each step, the table's info and rows."""
    seen: list[Any] = []
    for ids, grads, asynchronous in calls(seed, rounds):
        pushed = client.push_gradients("users", ids, grads, apply=asynchronous)
        seen.append((pushed.dropped_rows, pushed.pending_rows, pushed.rows_updated))
        if not asynchronous:
            seen.append(client.apply("users").rows_updated)
        info = client.get_table("users")
        seen.append((info.step, info.rows, info.evicted_rows, info.pending_rows))
        exported = client.export_weights("users")
        assert isinstance(exported, KeyedWeights)
        seen.append((exported.ids.tolist(), exported.weights.tobytes()))
    return seen


def test_a_restart_continues_bit_for_bit(tmp_path: Path) -> None:
    never_trained = np.array([7, -(2**63), 2**62 + 11])
    interrupted = LiveServer(env={"EMBED_DATA_DIR": str(tmp_path / "a")}).start()
    uninterrupted = LiveServer(env={"EMBED_DATA_DIR": str(tmp_path / "b")}).start()
    try:
        with EmbeddingClient(interrupted.url) as left, EmbeddingClient(uninterrupted.url) as right:
            for client in (left, right):
                info = client.create_table("users", embedding_dim=8, seed=3,
                                           optimizer={"kind": "adagrad", "lr": 0.3},
                                           dynamic=SETTINGS)
                assert info.is_dynamic and info.num_embeddings is None
            assert train(left, 1, 30) == train(right, 1, 30)
            initial = left.lookup("users", never_trained)
            left.set_labels("users", ["seven"], ids=[7])
        assert interrupted.stop() in (0, -15)
        assert "snapshot (shutdown): 1 table(s) written" in interrupted.output()
        interrupted = LiveServer(env={"EMBED_DATA_DIR": str(tmp_path / "a")}).start()
        with EmbeddingClient(interrupted.url) as left, EmbeddingClient(uninterrupted.url) as right:
            restored = left.get_table("users")
            assert restored.evicted_rows and restored.evicted_rows > 0
            assert restored.dynamic == {**SETTINGS}
            np.testing.assert_array_equal(left.lookup("users", never_trained), initial)
            assert left.get_labels("users") == {7: "seven"}
            assert train(left, 2, 30) == train(right, 2, 30)
    finally:
        interrupted.stop()
        uninterrupted.stop()
