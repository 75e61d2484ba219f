"""A synthetic corpus with planted topics, so a trained word2vec can be judged.

The vocabulary is split into `num_topics` topics of `words_per_topic` words each (word w belongs
to topic w // words_per_topic). Each sentence picks one topic and samples its words from that
topic (Zipf-like, so some words are frequent), with a small share of noise words drawn from the
whole vocabulary. Words that share a topic share contexts, so CBOW should place them close
together: a word's nearest neighbours (cosine) should mostly come from its own topic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


@dataclass(frozen=True)
class Corpus:
    sentences: np.ndarray  # (num_sentences, sentence_length) word ids
    topic_of_word: np.ndarray  # (vocab_size,) the planted topic of each word
    num_topics: int

    @property
    def vocab_size(self) -> int:
        return len(self.topic_of_word)

    def word_counts(self) -> np.ndarray:
        """(vocab_size,) occurrences of each word in the corpus."""
        return np.bincount(self.sentences.reshape(-1), minlength=self.vocab_size)


def make_corpus(
    num_topics: int = 8,
    words_per_topic: int = 25,
    num_sentences: int = 2000,
    sentence_length: int = 12,
    noise: float = 0.1,
    seed: int = 0,
) -> Corpus:
    """Sentences sampled topic by topic; `noise` is the share of words drawn from any topic."""
    if num_topics < 2 or words_per_topic < 2:
        raise ValueError(
            f"need num_topics >= 2 and words_per_topic >= 2, got {num_topics}, {words_per_topic}"
        )
    if not 0 <= noise < 1:
        raise ValueError(f"noise must be in [0, 1), got {noise}")
    rng = np.random.default_rng(seed)
    vocab_size = num_topics * words_per_topic
    topic_of_word = np.repeat(np.arange(num_topics), words_per_topic)  # (vocab,)
    rank_weights = 1.0 / np.arange(1, words_per_topic + 1) ** 0.5  # mild Zipf within a topic
    rank_weights /= rank_weights.sum()

    topics = rng.integers(num_topics, size=num_sentences)  # (sentences,)
    ranks = rng.choice(words_per_topic, size=(num_sentences, sentence_length), p=rank_weights)
    sentences = topics[:, None] * words_per_topic + ranks  # (sentences, length)
    is_noise = rng.random(sentences.shape) < noise
    sentences[is_noise] = rng.integers(vocab_size, size=int(is_noise.sum()))
    return Corpus(sentences=sentences.astype(np.int64), topic_of_word=topic_of_word,
                  num_topics=num_topics)


def cbow_examples(sentences: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (context, target) pair whose window lies inside one sentence.

    Returns contexts (n, 2 * window): the `window` words on each side of the target, and
    targets (n,). A sentence of length L gives L - 2 * window examples.
    """
    num_sentences, length = sentences.shape
    if window < 1 or 2 * window + 1 > length:
        raise ValueError(
            f"window must be in [1, (sentence_length - 1) // 2 = {(length - 1) // 2}], got {window}"
        )
    spans = sliding_window_view(sentences, 2 * window + 1, axis=1)  # (sentences, L-2w, 2w+1)
    spans = spans.reshape(-1, 2 * window + 1)  # (n, 2w+1)
    targets = spans[:, window].copy()  # (n,)
    contexts = np.delete(spans, window, axis=1)  # (n, 2w)
    return contexts, targets


class NegativeSampler:
    """Draws negative words from the unigram distribution raised to 3/4 (as word2vec does)."""

    def __init__(self, word_counts: np.ndarray, power: float = 0.75) -> None:
        weights = np.asarray(word_counts, dtype=np.float64) ** power  # (vocab,)
        self.probabilities = weights / weights.sum()

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return rng.choice(len(self.probabilities), size=shape, p=self.probabilities)
