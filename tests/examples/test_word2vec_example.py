"""The word2vec example, small, end to end: two trainer processes against a real uvicorn.

Thresholds, and why:
- held-out loss falls by at least 30%. Before training the "out" table is zero, so every score
  is 0 and the loss is exactly (1 + K) * log 2 = 4.159 for K = 5 negatives; this run reaches
  about 2.0 (52% lower), and a model that learned nothing stays at 4.16.
- neighbour purity at least 0.6. Random vectors score the chance purity, P(another word is in
  my topic) = 11/59 = 0.19 for 5 topics of 12 words (about 1 / num_topics); this run reaches
  0.95-1.0. 0.6 is over 3x chance and leaves room for the nondeterminism of two asynchronous
  trainers.
"""

from __future__ import annotations

import math
import queue
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from examples.word2vec.__main__ import main
from examples.word2vec.train import Word2VecConfig, _collect_epoch, run_trainer
from service.api.process import ServiceProcess
from service.client import EmbeddingClient, TableNotFoundError
from tests.conftest import LiveServer

pytestmark = pytest.mark.e2e

SMALL = ["--trainers", "2", "--num-topics", "5", "--words-per-topic", "12",
         "--num-sentences", "600", "--sentence-length", "10", "--dim", "16",
         "--batch-size", "64", "--epochs", "4", "--lr", "5.0", "--no-progress"]


def test_two_trainers_learn_the_planted_topics(
    live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EMBED_URL", live_server.url)  # the URL as the compose profile gives it
    plot = tmp_path / "loss.png"
    history = main([*SMALL, "--table-prefix", "w2v-test", "--plot", str(plot)])

    assert history.initial_loss == pytest.approx(6 * math.log(2), rel=1e-6)
    assert history.eval_loss[-1] <= 0.7 * history.initial_loss
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.chance_purity == pytest.approx(11 / 59)
    assert history.purity[-1] >= 0.6
    assert len(history.train_loss) == len(history.eval_loss) == len(history.purity) == 4
    assert len(history.batch_loss) == 4 * (29 + 29)  # 1800 examples per trainer, batches of 64

    printed = capsys.readouterr().out
    for epoch in range(1, 5):
        assert f"epoch {epoch}: train loss {history.train_loss[epoch - 1]:.4f}" in printed
    assert f"neighbour purity 0.172 -> {history.purity[-1]:.3f} (chance 0.186)" in printed
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not plot.exists()
    else:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with EmbeddingClient(live_server.url) as client:
        in_table, out_table = client.get_table("w2v-test-in"), client.get_table("w2v-test-out")
        assert (in_table.num_embeddings, in_table.embedding_dim) == (60, 16)
        assert in_table.step == out_table.step == 4 * 58  # one push with apply=True per batch
        assert in_table.pending_rows == out_table.pending_rows == 0
        for name in ("w2v-test-in", "w2v-test-out"):
            client.delete_table(name)


def test_a_rerun_replaces_the_tables_and_starts_afresh(live_server: LiveServer) -> None:
    with EmbeddingClient(live_server.url) as client:
        client.create_table("w2v-rerun-in", 3, 2)
        history = main([*SMALL, "--url", live_server.url, "--epochs", "1", "--trainers", "1",
                        "--table-prefix", "w2v-rerun", "--no-plot"])
        assert history.initial_loss == pytest.approx(6 * math.log(2), rel=1e-6)
        assert client.get_table("w2v-rerun-in").num_embeddings == 60
        for name in ("w2v-rerun-in", "w2v-rerun-out"):
            client.delete_table(name)


def test_a_failing_trainer_reports_its_error_and_the_coordinator_raises(
    live_server: LiveServer,
) -> None:
    config = Word2VecConfig(table_prefix="w2v-missing", trainers=1)
    messages: queue.Queue[tuple[str, int, object]] = queue.Queue()
    with pytest.raises(TableNotFoundError):
        run_trainer(config, live_server.url, 0, messages, threading.Barrier(1))
    kind, trainer, text = messages.get_nowait()
    assert (kind, trainer) == ("error", 0)
    assert "TableNotFoundError" in str(text) and "w2v-missing-in" in str(text)
    messages.put(("error", 0, text))
    with pytest.raises(RuntimeError, match="trainer 0 failed"):
        _collect_epoch(config, 1, messages, [], show_progress=False)


def test_serve_starts_a_service_and_stops_it() -> None:
    with ServiceProcess() as service:
        assert httpx.get(f"{service.url}/healthz").json() == {"status": "ok"}
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{service.url}/healthz", timeout=2.0)


def test_serve_with_a_token_trains_against_a_service_that_requires_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """--serve starts its own service, which reads EMBED_TOKEN; the example sends the same."""
    monkeypatch.setenv("EMBED_TOKEN", "w2v-secret")
    history = main([*SMALL, "--serve", "--epochs", "1", "--trainers", "1", "--no-plot"])
    assert history.eval_loss[-1] < history.initial_loss
    assert "started the service on http://127.0.0.1:" in capsys.readouterr().out
    with ServiceProcess() as service:  # the token is really required
        url = service.url
        reply = httpx.post(f"{url}/v1/tables", json={"name": "x", "num_embeddings": 1,
                                                     "embedding_dim": 1})
        assert reply.status_code == 401


def test_held_out_sentences_are_not_the_training_ones() -> None:
    config = Word2VecConfig(num_sentences=50, eval_examples=64)
    train, held_out = config.corpus().sentences, config.held_out_corpus().sentences
    assert held_out.shape == (8, 12)  # ceil(64 / 8 examples per sentence)
    assert not any(np.array_equal(row, other) for row in held_out for other in train)
