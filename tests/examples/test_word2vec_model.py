"""The example's numpy parts in-process: corpus, CBOW + negative sampling math, purity."""

from __future__ import annotations

import numpy as np
import pytest

from examples.word2vec.corpus import NegativeSampler, cbow_examples, make_corpus
from examples.word2vec.metrics import chance_purity, nearest_neighbours, neighbour_purity
from examples.word2vec.model import CBOWNegativeSampling
from tests.reference import ReferenceEmbedding


def test_corpus_sentences_stay_in_their_topic_but_for_noise() -> None:
    corpus = make_corpus(num_topics=4, words_per_topic=10, num_sentences=500,
                         sentence_length=8, noise=0.1, seed=3)
    assert corpus.sentences.shape == (500, 8)
    assert corpus.vocab_size == 40
    assert corpus.topic_of_word.tolist() == [t for t in range(4) for _ in range(10)]
    topics = corpus.topic_of_word[corpus.sentences]  # (500, 8)
    majority = np.array([np.bincount(row, minlength=4).argmax() for row in topics])
    off_topic = (topics != majority[:, None]).mean()
    assert 0.03 < off_topic < 0.12  # noise 0.1, of which 3/4 lands in another topic
    assert make_corpus(4, 10, 500, 8, 0.1, seed=3).sentences.tolist() == corpus.sentences.tolist()


def test_corpus_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="num_topics >= 2"):
        make_corpus(num_topics=1)
    with pytest.raises(ValueError, match="noise must be in"):
        make_corpus(noise=1.0)


def test_cbow_examples_are_the_windows_inside_each_sentence() -> None:
    sentences = np.array([[10, 11, 12, 13, 14], [20, 21, 22, 23, 24]])
    contexts, targets = cbow_examples(sentences, window=1)
    assert targets.tolist() == [11, 12, 13, 21, 22, 23]
    assert contexts.tolist() == [[10, 12], [11, 13], [12, 14], [20, 22], [21, 23], [22, 24]]
    contexts, targets = cbow_examples(sentences, window=2)
    assert targets.tolist() == [12, 22]
    assert contexts.tolist() == [[10, 11, 13, 14], [20, 21, 23, 24]]
    with pytest.raises(ValueError, match="window must be in"):
        cbow_examples(sentences, window=3)


def test_negative_sampler_follows_unigram_to_the_three_quarters() -> None:
    sampler = NegativeSampler(np.array([16, 1, 0, 81]))
    expected = np.array([8.0, 1.0, 0.0, 27.0]) / 36.0
    np.testing.assert_allclose(sampler.probabilities, expected)
    draws = sampler.sample(np.random.default_rng(0), (20000,))
    assert 2 not in draws
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 20000, expected, atol=0.01)


def loop_loss(w_in, w_out, contexts, targets, negatives) -> float:
    """The loss one example at a time, with Python loops: the oracle for the vectorized one."""
    total = 0.0
    for b in range(len(targets)):
        hidden = sum(w_in[c] for c in contexts[b]) / len(contexts[b])
        total += np.log1p(np.exp(-float(hidden @ w_out[targets[b]])))
        for n in negatives[b]:
            total += np.log1p(np.exp(float(hidden @ w_out[n])))
    return total / len(targets)


def test_forward_matches_a_loop_and_backward_matches_finite_differences() -> None:
    rng = np.random.default_rng(1)
    vocab, dim = 7, 3
    w_in = rng.standard_normal((vocab, dim))
    w_out = rng.standard_normal((vocab, dim))
    contexts = rng.integers(vocab, size=(5, 4))  # duplicates across and within rows
    targets = rng.integers(vocab, size=5)
    negatives = rng.integers(vocab, size=(5, 3))
    in_layer, out_layer = ReferenceEmbedding(w_in.copy()), ReferenceEmbedding(w_out.copy())
    model = CBOWNegativeSampling(in_layer, out_layer)

    loss = model.forward(contexts, targets, negatives)
    assert loss == pytest.approx(loop_loss(w_in, w_out, contexts, targets, negatives), rel=1e-12)
    model.backward()

    for weights, grad, which in ((w_in, in_layer.grads[0], 0), (w_out, out_layer.grads[0], 1)):
        numeric = np.zeros_like(weights)
        for index in np.ndindex(weights.shape):
            shifted = [w_in.copy(), w_out.copy()]
            shifted[which][index] += 1e-6
            plus = loop_loss(*shifted, contexts, targets, negatives)
            shifted[which][index] -= 2e-6
            minus = loop_loss(*shifted, contexts, targets, negatives)
            numeric[index] = (plus - minus) / 2e-6
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_backward_before_forward_is_an_error() -> None:
    model = CBOWNegativeSampling(ReferenceEmbedding(np.zeros((3, 2))),
                                 ReferenceEmbedding(np.zeros((3, 2))))
    with pytest.raises(RuntimeError, match="needs a forward"):
        model.backward()


def test_purity_of_planted_clusters_is_one_and_of_noise_near_chance() -> None:
    topic_of_word = np.repeat(np.arange(4), 10)  # 4 topics of 10 words
    centres = np.eye(4) * 10.0
    rng = np.random.default_rng(0)
    clustered = centres[topic_of_word] + rng.standard_normal((40, 4))
    assert neighbour_purity(clustered, topic_of_word, k=5) == 1.0
    assert chance_purity(topic_of_word) == pytest.approx(9 / 39)
    random_purities = [
        neighbour_purity(rng.standard_normal((40, 8)), topic_of_word, k=5) for _ in range(20)
    ]
    assert np.mean(random_purities) == pytest.approx(9 / 39, abs=0.05)


def test_nearest_neighbours_are_by_cosine_best_first_and_exclude_the_word() -> None:
    vectors = np.array([[1.0, 0.0], [1.0, 0.2], [0.0, 1.0], [-1.0, 0.5]])
    assert nearest_neighbours(vectors, 2).tolist() == [[1, 2], [0, 2], [3, 1], [2, 1]]
    with pytest.raises(ValueError, match="k must be in"):
        nearest_neighbours(vectors, 4)
