"""The coordinator's measures, and what it shows at the end.

- Held-out loss: the CBOW loss on examples from sentences no trainer sees, negatives drawn once.
- Quality: for the planted corpus, the neighbour purity of the "in" vectors; for a text file,
  the Spearman correlation of their cosine similarities with human scores (--eval-pairs), or
  nothing without a pairs file.
- At the end: the "in" table is labelled with the words (PUT .../labels: the /ui page and
  most_similar then speak words), and the service's neighbour search lists the nearest words of
  a few frequent ones.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from examples.word2vec.corpus import Corpus, NegativeSampler, cbow_examples
from examples.word2vec.metrics import chance_purity, neighbour_purity
from examples.word2vec.model import CBOWNegativeSampling
from examples.word2vec.text import TextCorpus, read_pairs, similarity_score, window_examples
from service.client import EmbeddingClient
from service.training import RemoteEmbedding

if TYPE_CHECKING:
    from examples.word2vec.train import Word2VecConfig

SHOWN_WORDS = 8  # frequent words whose neighbours are printed at the end
SHOWN_NEIGHBOURS = 8


class Evaluator:
    def __init__(self, client: EmbeddingClient, config: Word2VecConfig,
                 corpus: Corpus | TextCorpus) -> None:
        rng = np.random.default_rng([config.seed, 0])
        if isinstance(corpus, TextCorpus):
            contexts, targets = window_examples(corpus.held_out, config.window)
        else:
            contexts, targets = cbow_examples(config.held_out_corpus().sentences, config.window)
        self.contexts = contexts[: config.eval_examples]  # (E, 2w)
        self.targets = targets[: config.eval_examples]  # (E,)
        self.negatives = NegativeSampler(corpus.word_counts()).sample(
            rng, (len(self.targets), config.negatives))  # (E, K)
        in_table, out_table = config.tables
        self.in_layer = RemoteEmbedding(client, in_table)
        self.model = CBOWNegativeSampling(self.in_layer, RemoteEmbedding(client, out_table))
        self.corpus = corpus
        self.neighbours = config.neighbours
        self.pairs = read_pairs(Path(config.eval_pairs)) if config.eval_pairs else []
        self.pairs_used = 0

    @property
    def quality_name(self) -> str:
        if isinstance(self.corpus, TextCorpus):
            return "Spearman vs human scores" if self.pairs else "no quality measure"
        return "neighbour purity"

    @property
    def chance(self) -> float:
        if isinstance(self.corpus, TextCorpus):
            return 0.0
        return chance_purity(self.corpus.topic_of_word)

    def describe(self) -> str:
        corpus = self.corpus
        if isinstance(corpus, TextCorpus):
            return (f"{corpus.vocab_size} words (of {corpus.tokens} tokens), "
                    f"{len(corpus.sentences)} training lines, {len(corpus.held_out)} held out"
                    + (f", {self.pairs_used} of {len(self.pairs)} word pairs in the vocabulary"
                       if self.pairs else ""))
        return (f"{corpus.vocab_size} words in {corpus.num_topics} topics, "
                f"{len(corpus.sentences)} sentences")

    def loss(self) -> float:
        if not len(self.targets):
            return math.nan
        return self.model.forward(self.contexts, self.targets, self.negatives)  # no backward

    def quality(self) -> float:
        vectors = self.in_layer.forward(np.arange(self.corpus.vocab_size))  # (vocab, D)
        if isinstance(self.corpus, TextCorpus):
            if not self.pairs:
                return math.nan
            rho, self.pairs_used = similarity_score(vectors, self.corpus.words, self.pairs)
            return rho
        return neighbour_purity(vectors, self.corpus.topic_of_word, self.neighbours)


def words_of(corpus: Corpus | TextCorpus) -> list[str]:
    """The label of each row: the text's words, or topic and rank for the planted corpus."""
    if isinstance(corpus, TextCorpus):
        return corpus.words
    per_topic = corpus.vocab_size // corpus.num_topics
    return [f"t{word // per_topic}w{word % per_topic}" for word in range(corpus.vocab_size)]


def label_and_show(client: EmbeddingClient, config: Word2VecConfig,
                   corpus: Corpus | TextCorpus) -> dict[str, list[tuple[str | int, float]]]:
    """Label the "in" table with the words; print (and return) the neighbours of a few
    frequent words: of five letters or more, past the 50 most frequent (function words), for a
    text; the first word of each topic for the planted corpus."""
    words = words_of(corpus)
    in_table = config.tables[0]
    client.set_labels(in_table, words)
    if isinstance(corpus, TextCorpus):
        candidates = words[50:] if len(words) > 100 else words
        shown = [word for word in candidates if len(word) >= 5][:SHOWN_WORDS]
    else:
        shown = [word for word in words if word.endswith("w0")][:SHOWN_WORDS]
    found = client.most_similar_batch(in_table, [{"positive": [word]} for word in shown],
                                      k=SHOWN_NEIGHBOURS)
    neighbours = {word: result.items() for word, result in zip(shown, found, strict=True)}
    print(f"labelled table {in_table!r} with {len(words)} words; nearest words (cosine):",
          flush=True)
    for word, items in neighbours.items():
        print(f"  {word}: " + ", ".join(f"{name} {score:.2f}" for name, score in items),
              flush=True)
    return neighbours
