"""The recommendation example, small, end to end: two trainer processes against a real uvicorn,
dynamic user and item tables keyed by hashed 64-bit ids.

Threshold, and why: the held-out hit rate at 10 must be at least twice the popularity
baseline's and five times chance. Chance is 10/300 = 0.033; the popularity baseline (the most
clicked items for everyone) reaches about 0.12 on this log; this run reaches about 0.3. A model
that learned nothing scores near chance (its untrained rows are random), far below the bar.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from examples.recsys.__main__ import main
from examples.recsys.data import hashed, make_log
from service.client import EmbeddingClient
from tests.conftest import LiveServer

pytestmark = pytest.mark.e2e

SMALL = ["--trainers", "2", "--users", "600", "--items", "300", "--topics", "6",
         "--clicks", "8000", "--dim", "16", "--epochs", "3", "--batch-size", "128",
         "--no-progress"]


def test_two_trainers_beat_the_popularity_baseline(
    live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EMBED_URL", live_server.url)
    plot = tmp_path / "hit_rate.png"
    history = main([*SMALL, "--table-prefix", "recsys-test", "--plot", str(plot)])

    assert history.chance == pytest.approx(10 / 300)
    assert history.initial < 3 * history.chance  # untrained: near chance
    assert history.hit_rate[-1] >= 2 * history.popularity
    assert history.hit_rate[-1] >= 5 * history.chance
    assert len(history.hit_rate) == len(history.train_loss) == 3
    assert history.train_loss[-1] < history.train_loss[0]
    printed = capsys.readouterr().out
    assert f"epoch 3: train loss {history.train_loss[-1]:.4f}" in printed
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not plot.exists()
    else:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    log = make_log(600, 300, 6, 8000, 0.1, 0)
    with EmbeddingClient(live_server.url) as client:
        users, items = client.get_table("recsys-test-users"), client.get_table("recsys-test-items")
        assert users.num_embeddings is None and users.dynamic is not None
        assert users.rows == len(np.unique(log.users[log.train]))  # one row per user who clicked
        assert items.dynamic is not None and items.dynamic["admit_after"] == 2
        assert history.rows == {"recsys-test-users": users.rows, "recsys-test-items": items.rows}
        for name in ("recsys-test-users", "recsys-test-items"):
            client.delete_table(name)


def test_ids_are_64_bit_hashes_without_collisions() -> None:
    keys = hashed(np.arange(100_000), 1)
    assert keys.dtype == np.uint64 and len(np.unique(keys)) == 100_000
    assert 0.45 < float(np.mean(keys >= np.uint64(2**63))) < 0.55  # half beyond int64's range
