"""How well the embeddings recovered the planted topics."""

from __future__ import annotations

import numpy as np


def nearest_neighbours(vectors: np.ndarray, k: int) -> np.ndarray:
    """(vocab, k): for each word, the k other words of highest cosine similarity, best first."""
    if not 1 <= k < len(vectors):
        raise ValueError(f"k must be in [1, vocab_size - 1 = {len(vectors) - 1}], got {k}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # (vocab, 1)
    unit = vectors / np.maximum(norms, 1e-12)  # (vocab, D)
    similarity = unit @ unit.T  # (vocab, vocab)
    np.fill_diagonal(similarity, -np.inf)  # a word is not its own neighbour
    nearest = np.argpartition(-similarity, k, axis=1)[:, :k]  # (vocab, k), unordered
    order = np.argsort(-np.take_along_axis(similarity, nearest, axis=1), axis=1, kind="stable")
    return np.take_along_axis(nearest, order, axis=1)


def neighbour_purity(vectors: np.ndarray, topic_of_word: np.ndarray, k: int = 10) -> float:
    """Share of each word's k nearest neighbours (cosine) that are in its own topic, averaged
    over the vocabulary. Random vectors score about (words_per_topic - 1) / (vocab - 1), close
    to 1 / num_topics; embeddings that found the topics score close to 1."""
    neighbours = nearest_neighbours(vectors, k)  # (vocab, k)
    same_topic = topic_of_word[neighbours] == topic_of_word[:, None]  # (vocab, k)
    return float(same_topic.mean())


def chance_purity(topic_of_word: np.ndarray) -> float:
    """Expected purity of random neighbours: P(another word shares my topic)."""
    counts = np.bincount(topic_of_word)
    vocab = len(topic_of_word)
    return float((counts * (counts - 1)).sum() / (vocab * (vocab - 1)))
