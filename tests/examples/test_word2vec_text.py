"""The word2vec example on a text file: vocabulary, subsampling, windows and Spearman against
small oracles, and a run end to end on a small text against a real uvicorn (labels set, the
neighbours printed, Spearman reported)."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import numpy as np
import pytest

from examples.word2vec.__main__ import TEXT_DEFAULTS, main, parse
from examples.word2vec.corpus import make_corpus
from examples.word2vec.model import CBOWNegativeSampling
from examples.word2vec.text import (
    keep_probabilities,
    ranks,
    read_corpus,
    read_pairs,
    spearman,
    window_examples,
)
from tests.conftest import LiveServer


def test_vocabulary_min_count_and_held_out_lines(tmp_path: Path) -> None:
    text = tmp_path / "text.txt"
    text.write_text("b a a c\n\nd a b b\nc c a e\nz z z z z z\n")
    corpus = read_corpus(text, min_count=2, held_out_share=0.25)
    # training lines: the first three non-empty ones; counts a 4, b 3, c 3 (b seen first)
    assert corpus.words == ["a", "b", "c"]
    assert corpus.counts.tolist() == [4, 3, 3]
    assert [line.tolist() for line in corpus.sentences] == [[1, 0, 0, 2], [0, 1, 1], [2, 2, 0]]
    assert [line.tolist() for line in corpus.held_out] == [[]]  # "z" never trained on
    with pytest.raises(ValueError, match="fewer than 2 words"):
        read_corpus(text, min_count=50)


def test_keep_probabilities_are_word2vec_c() -> None:
    counts = np.array([900, 90, 10])
    keep = keep_probabilities(counts, 1e-2)
    for count, kept in zip(counts, keep, strict=True):
        f = count / 1000
        assert kept == pytest.approx(min(1.0, (math.sqrt(f / 1e-2) + 1) * 1e-2 / f))
    assert keep.tolist()[-1] == 1.0
    assert keep_probabilities(counts, 0).tolist() == [1.0, 1.0, 1.0]


def test_windows_stay_inside_their_line() -> None:
    lines = [np.array([1, 2, 3, 4, 5, 6]), np.array([7, 8]), np.array([9, 10, 11, 12, 13])]
    contexts, targets = window_examples(lines, window=2)
    expected = [(line[i - 2 : i].tolist() + line[i + 1 : i + 3].tolist(), int(line[i]))
                for line in lines for i in range(2, len(line) - 2)]
    assert [(c.tolist(), int(t)) for c, t in zip(contexts, targets, strict=True)] == expected


def test_spearman_with_ties() -> None:
    assert ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == pytest.approx(-1.0)
    # textbook case: d = rank differences, no ties: 1 - 6 sum d^2 / (n (n^2 - 1))
    a, b = np.array([1.0, 5, 2, 8, 3]), np.array([2.0, 4, 1, 9, 7])
    d = ranks(a) - ranks(b)
    assert spearman(a, b) == pytest.approx(1 - 6 * (d**2).sum() / (5 * 24))


def test_context_update_rules() -> None:
    """"word2vec" gives each context row the whole hidden gradient: 2w times "mean"'s."""
    pushed: dict[str, list[np.ndarray]] = {"mean": [], "word2vec": []}

    class Layer:
        def __init__(self, weights: np.ndarray, into: list[np.ndarray]) -> None:
            self.weights, self.into = weights, into

        def forward(self, idx: np.ndarray) -> np.ndarray:
            return self.weights[idx]

        def backward(self, dout: np.ndarray) -> None:
            self.into.append(dout)

    rng = np.random.default_rng(0)
    weights = rng.normal(size=(10, 4))
    for rule, into in pushed.items():
        model = CBOWNegativeSampling(Layer(weights, into), Layer(weights, []), rule)
        model.forward(np.array([[1, 2, 3, 4]]), np.array([5]), np.array([[6, 7]]))
        model.backward()
    np.testing.assert_allclose(pushed["word2vec"][0], 4 * pushed["mean"][0], rtol=1e-12)


def test_text_defaults_apply_only_with_a_corpus() -> None:
    assert parse([]).lr == 5.0 and parse([]).update == "mean" and parse([]).dim == 32
    text = parse(["--corpus", "x.txt"])
    assert {name: getattr(text, name) for name in TEXT_DEFAULTS} == TEXT_DEFAULTS
    assert parse(["--corpus", "x.txt", "--lr", "1.5"]).lr == 1.5
    with pytest.raises(SystemExit):
        parse(["--eval-pairs", "pairs.tsv"])


@pytest.mark.e2e
def test_a_text_file_end_to_end(live_server: LiveServer, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """Planted topics written out as words: the example sees only text. Pairs of words of one
    topic get human score 9, of two topics 1, so a model that learned the topics correlates."""
    planted = make_corpus(num_topics=4, words_per_topic=10, num_sentences=500,
                          sentence_length=10, seed=3)
    name = [f"topic{w // 10}word{w % 10}" for w in range(40)]
    (tmp_path / "text.txt").write_text(
        "\n".join(" ".join(name[w] for w in line) for line in planted.sentences) + "\n")
    pairs = [(name[a], name[b], 9.0 if a // 10 == b // 10 else 1.0)
             for a in range(0, 40, 3) for b in range(1, 40, 7) if a != b]
    (tmp_path / "pairs.tsv").write_text(
        "# word 1\tword 2\thuman\n" + "".join(f"{a}\t{b}\t{s}\n" for a, b, s in pairs)
        + "unknownword\ttopic0word0\t5\n")
    history = main(["--url", live_server.url, "--corpus", str(tmp_path / "text.txt"),
                    "--eval-pairs", str(tmp_path / "pairs.tsv"), "--epochs", "3",
                    "--dim", "16", "--window", "2", "--batch-size", "64", "--trainers", "1",
                    "--lr", "5", "--update", "mean", "--subsample", "0",
                    "--table-prefix", "w2v-text", "--no-plot", "--no-progress"])
    assert history.quality == "Spearman vs human scores"
    assert history.pairs_used == len(pairs)  # the unknown word's pair is left out
    assert len(read_pairs(tmp_path / "pairs.tsv")) == len(pairs) + 1
    assert history.purity[-1] > 0.5 > abs(history.initial_purity)
    assert history.eval_loss[-1] < history.initial_loss
    labels = httpx.get(f"{live_server.url}/v1/tables/w2v-text-in/labels").json()
    assert sorted(labels["labels"]) == sorted(name)
    printed = capsys.readouterr().out
    assert f"labelled table 'w2v-text-in' with {len(name)} words" in printed
    shown = history.neighbours
    assert len(shown) == 8
    for word, items in shown.items():  # neighbours mostly share the word's topic
        topic = word[: len("topicN")]
        assert sum(str(other).startswith(topic) for other, _ in items) >= 5, (word, items)
        assert f"  {word}: " in printed
