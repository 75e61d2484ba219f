"""Your own text for word2vec: a vocabulary, word2vec's subsampling, CBOW windows and a
word-similarity score.

- The corpus is a whitespace-tokenized text file, one sentence (or document) per line. Words
  seen fewer than `min_count` times are dropped; the vocabulary is sorted by count, most frequent
  first, so row i of the table is the i-th most frequent word (ties: first seen first).
- The last `held_out_share` of the lines are kept out of training: the held-out loss is measured
  on them.
- Subsampling (Mikolov et al. 2013, as word2vec.c does it): each epoch, an occurrence of a word
  of frequency f (share of all tokens) is kept with probability min(1, (sqrt(f / t) + 1) t / f)
  for the threshold t, so "the" and "of" stop crowding every window.
- Examples: every position whose window of `window` words on each side lies inside its line,
  after subsampling.
- Word similarity: a tab-separated file of word, word, human score (WordSim-353's layout; lines
  starting with # are comments) scored by the Spearman correlation between the human scores and
  the cosine similarity of the two words' vectors, over the pairs whose words are both in the
  vocabulary.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


@dataclass(frozen=True)
class TextCorpus:
    words: list[str]  # the vocabulary, most frequent first: row i is words[i]
    counts: np.ndarray  # (vocab,) occurrences in the training lines
    sentences: list[np.ndarray]  # training lines as word ids (out-of-vocabulary words dropped)
    held_out: list[np.ndarray]  # held-out lines as word ids

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def word_counts(self) -> np.ndarray:
        return self.counts

    @property
    def tokens(self) -> int:
        return int(self.counts.sum())


def read_corpus(path: Path, min_count: int = 5, held_out_share: float = 0.05) -> TextCorpus:
    """The corpus of a text file (see the module docstring)."""
    lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    if len(lines) < 2:
        raise ValueError(f"{path} has {len(lines)} non-empty line(s); word2vec needs at least 2")
    held = max(1, round(len(lines) * held_out_share))
    training, held_out = lines[:-held], lines[-held:]
    counts = Counter(word for line in training for word in line)
    first_seen: dict[str, int] = {}
    for line in training:
        for word in line:
            first_seen.setdefault(word, len(first_seen))
    words = sorted((w for w, c in counts.items() if c >= min_count),
                   key=lambda w: (-counts[w], first_seen[w]))
    if len(words) < 2:
        raise ValueError(f"{path}: fewer than 2 words occur at least min_count={min_count} times")
    index = {word: row for row, word in enumerate(words)}

    def encode(line: list[str]) -> np.ndarray:
        return np.array([index[w] for w in line if w in index], dtype=np.int64)

    return TextCorpus(words, np.array([counts[w] for w in words], dtype=np.int64),
                      [encode(line) for line in training], [encode(line) for line in held_out])


def keep_probabilities(counts: np.ndarray, threshold: float) -> np.ndarray:
    """(vocab,) word2vec.c's probability of keeping an occurrence of each word (1: no
    subsampling when threshold is 0)."""
    if threshold <= 0:
        return np.ones(len(counts))
    frequency = counts / counts.sum()  # (vocab,)
    return np.minimum(1.0, (np.sqrt(frequency / threshold) + 1) * threshold / frequency)


def subsample(sentences: list[np.ndarray], keep: np.ndarray,
              rng: np.random.Generator) -> list[np.ndarray]:
    return [line[rng.random(len(line)) < keep[line]] for line in sentences]


def window_examples(sentences: list[np.ndarray], window: int) -> tuple[np.ndarray, np.ndarray]:
    """contexts (n, 2 * window) and targets (n,): every position whose window lies inside its
    line, in corpus order."""
    width = 2 * window + 1
    lines = [line for line in sentences if len(line) >= width]
    if not lines:
        return np.empty((0, 2 * window), np.int64), np.empty(0, np.int64)
    stream = np.concatenate(lines)  # (tokens,)
    line_of = np.repeat(np.arange(len(lines)), [len(line) for line in lines])  # (tokens,)
    spans = sliding_window_view(stream, width)  # (tokens - 2w, 2w + 1)
    same_line = line_of[: len(spans)] == line_of[width - 1 :]  # window starts and ends together
    spans = spans[same_line]
    return np.delete(spans, window, axis=1), spans[:, window].copy()


def read_pairs(path: Path) -> list[tuple[str, str, float]]:
    """(word, word, human score) of a WordSim-353-style file; comment lines (#) skipped."""
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) < 3:
            raise ValueError(f"{path}:{number}: expected word<TAB>word<TAB>score, got {line!r}")
        pairs.append((fields[0].strip(), fields[1].strip(), float(fields[2])))
    return pairs


def ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank (as Spearman's rho wants)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    result = np.empty(len(values))
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        result[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return result


def spearman(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman's rank correlation: the Pearson correlation of the two rankings."""
    a, b = ranks(np.asarray(first, float)), ranks(np.asarray(second, float))
    a, b = a - a.mean(), b - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator else 0.0


def similarity_score(vectors: np.ndarray, words: list[str],
                     pairs: list[tuple[str, str, float]]) -> tuple[float, int]:
    """Spearman of cosine similarity against the human scores, and the pairs it used (both
    words in the vocabulary; case-insensitive when the vocabulary is lowercase)."""
    index = {word: row for row, word in enumerate(words)}
    lower = all(word == word.lower() for word in words)
    used_cosines, used_scores = [], []
    for first, second, score in pairs:
        a, b = (first.lower(), second.lower()) if lower else (first, second)
        if a in index and b in index:
            u, v = vectors[index[a]], vectors[index[b]]
            norms = float(np.linalg.norm(u) * np.linalg.norm(v))
            used_cosines.append(float(u @ v) / norms if norms else 0.0)
            used_scores.append(score)
    if len(used_scores) < 2:
        return float("nan"), len(used_scores)
    return spearman(np.array(used_cosines), np.array(used_scores)), len(used_scores)
