"""Word2vec CBOW trained by several processes at once, with both tables in the service.

The corpus is the planted-topic one (examples.word2vec.corpus; judged by neighbour purity), or
a text file of your own (examples.word2vec.text; judged by the Spearman correlation with human
word-similarity scores, when a WordSim-353-style file is given). Either way the "in" table is
labelled with the words at the end, and the neighbours of a few frequent words are printed
(service's neighbour search, through the client's most_similar).

Asynchronous training: every trainer process pushes its gradients with apply=True, so each push
is an SGD step on the rows it touched, as soon as it arrives (Hogwild-style; no trainer waits
for another within an epoch). Trainers pull fresh rows before every batch. The coordinator (the
calling process) creates the tables, shows progress, and at each epoch's end, when every trainer
has finished it, measures a held-out loss and the neighbour purity; then the next epoch starts.
"""

from __future__ import annotations

import math
import multiprocessing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from examples.trainers import WAIT_SECONDS, collect_epoch, end_epoch, reporting, running
from examples.word2vec.corpus import Corpus, NegativeSampler, cbow_examples, make_corpus
from examples.word2vec.evaluate import Evaluator, label_and_show
from examples.word2vec.model import CBOWNegativeSampling
from examples.word2vec.text import (
    TextCorpus,
    keep_probabilities,
    read_corpus,
    subsample,
    window_examples,
)
from service.client import EmbeddingClient, TableExistsError
from service.training import RemoteEmbedding


@dataclass(frozen=True)
class Word2VecConfig:
    num_topics: int = 8
    words_per_topic: int = 25
    num_sentences: int = 2000
    sentence_length: int = 12
    noise: float = 0.1  # share of words drawn from any topic
    window: int = 2  # context words on each side: contexts are (batch, 2 * window)
    dim: int = 32
    negatives: int = 5
    batch_size: int = 128
    epochs: int = 5
    lr: float = 5.0  # SGD on the tables; the gradient is that of the batch's mean loss
    trainers: int = 2
    seed: int = 0
    neighbours: int = 10  # k of the purity measure
    eval_examples: int = 2048  # held-out loss: examples from sentences no trainer sees
    table_prefix: str = "word2vec"
    update: str = "mean"  # context rows' update: "mean" (exact) or "word2vec" (whole gradient)
    corpus_path: str = ""  # a text file to train on instead of the planted topics
    eval_pairs: str = ""  # a WordSim-353-style file: word, word, human score
    min_count: int = 5  # text: words seen fewer times are dropped
    subsample: float = 1e-3  # text: word2vec's subsampling threshold (0: none)

    @property
    def is_text(self) -> bool:
        return bool(self.corpus_path)

    @property
    def vocab_size(self) -> int:
        return self.num_topics * self.words_per_topic

    @property
    def tables(self) -> tuple[str, str]:
        return f"{self.table_prefix}-in", f"{self.table_prefix}-out"

    def corpus(self) -> Corpus | TextCorpus:
        if self.is_text:
            return read_corpus(Path(self.corpus_path), self.min_count)
        return make_corpus(self.num_topics, self.words_per_topic, self.num_sentences,
                           self.sentence_length, self.noise, self.seed)

    def epoch_examples(self, corpus: Corpus | TextCorpus,
                       epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """contexts (n, 2w) and targets (n,) of an epoch: the planted corpus's every epoch; a
        text's after that epoch's subsampling (the same in every trainer: seeded by epoch)."""
        if isinstance(corpus, TextCorpus):
            keep = keep_probabilities(corpus.counts, self.subsample)
            rng = np.random.default_rng([self.seed, epoch, 7])
            return window_examples(subsample(corpus.sentences, keep, rng), self.window)
        return cbow_examples(corpus.sentences, self.window)

    def held_out_corpus(self) -> Corpus:
        """New sentences from the same topics (another seed): the loss is measured on them."""
        per_sentence = self.sentence_length - 2 * self.window
        return make_corpus(self.num_topics, self.words_per_topic,
                           math.ceil(self.eval_examples / per_sentence), self.sentence_length,
                           self.noise, self.seed + 1_000_003)


@dataclass
class History:
    chance_purity: float
    initial_loss: float = math.nan  # held-out loss before training
    initial_purity: float = math.nan
    train_loss: list[float] = field(default_factory=list)  # mean batch loss of each epoch
    eval_loss: list[float] = field(default_factory=list)  # held-out loss after each epoch
    purity: list[float] = field(default_factory=list)  # after each epoch
    batch_loss: list[float] = field(default_factory=list)  # every batch, in arrival order
    quality: str = "neighbour purity"  # what `purity` measures (text: Spearman vs humans)
    pairs_used: int = 0  # text: word pairs of the eval file found in the vocabulary
    neighbours: dict[str, list[tuple[str | int, float]]] = field(default_factory=dict)


def create_tables(client: EmbeddingClient, config: Word2VecConfig, vocab_size: int) -> None:
    """"in" starts small and random, "out" at zero (as word2vec does); an existing table of the
    same name is replaced, so a rerun starts afresh."""
    inits = ({"kind": "uniform", "low": -0.5 / config.dim, "high": 0.5 / config.dim},
             {"kind": "zeros"})
    for name, init in zip(config.tables, inits, strict=True):
        options: dict[str, Any] = dict(
            dtype="float32", init=init, seed=config.seed,
            optimizer={"kind": "sgd", "lr": config.lr},
        )
        try:
            client.create_table(name, vocab_size, config.dim, **options)
        except TableExistsError:
            client.delete_table(name)
            client.create_table(name, vocab_size, config.dim, **options)


def batches_per_epoch(config: Word2VecConfig, trainer: int, examples: int | None = None) -> int:
    if examples is None:
        examples = config.num_sentences * (config.sentence_length - 2 * config.window)
    shard = len(range(trainer, examples, config.trainers))
    return math.ceil(shard / config.batch_size)


def run_trainer(config: Word2VecConfig, url: str, trainer: int, messages: Any,
                epoch_done: Any, token: str | None = None) -> None:
    """One trainer process: its shard of the examples, every epoch, pushing as it goes.
    Sends ("batch", trainer, loss) per batch and ("epoch", trainer, epoch) at each epoch's end,
    then waits at the barrier for the coordinator's evaluation."""
    with reporting(messages, trainer):
        corpus = config.corpus()
        rng = np.random.default_rng([config.seed, trainer + 1])
        sampler = NegativeSampler(corpus.word_counts())
        in_table, out_table = config.tables
        with EmbeddingClient(url, token=token) as client:
            model = CBOWNegativeSampling(RemoteEmbedding(client, in_table, apply=True),
                                         RemoteEmbedding(client, out_table, apply=True),
                                         config.update)
            for epoch in range(1, config.epochs + 1):
                contexts, targets = config.epoch_examples(corpus, epoch)  # (n, 2w), (n,)
                order = rng.permutation(np.arange(trainer, len(targets), config.trainers))
                for start in range(0, len(order), config.batch_size):
                    batch = order[start:start + config.batch_size]  # (B,)
                    negatives = sampler.sample(rng, (len(batch), config.negatives))  # (B, K)
                    loss = model.forward(contexts[batch], targets[batch], negatives)
                    model.backward()  # two pushes with apply=True: the step happens now
                    messages.put(("batch", trainer, loss))
                end_epoch(messages, trainer, epoch, epoch_done)


def train(config: Word2VecConfig, url: str, show_progress: bool = True,
          token: str | None = None) -> History:
    """Create the tables, run config.trainers trainer processes, report each epoch, then label
    the "in" table with the words and show the neighbours of a few frequent ones. `token`: the
    service's bearer token, if it has one (EMBED_TOKEN)."""
    corpus = config.corpus()
    context = multiprocessing.get_context("spawn")  # no fork of a process holding sockets
    messages = context.Queue()
    epoch_done = context.Barrier(config.trainers + 1)
    with EmbeddingClient(url, token=token) as client:
        create_tables(client, config, corpus.vocab_size)
        evaluator = Evaluator(client, config, corpus)
        history = History(chance_purity=evaluator.chance, quality=evaluator.quality_name)
        history.initial_loss, history.initial_purity = evaluator.loss(), evaluator.quality()
        history.pairs_used = evaluator.pairs_used
        _say(f"{config.trainers} trainers, {evaluator.describe()}; before training: held-out "
             f"loss {history.initial_loss:.4f}, {history.quality} "
             f"{history.initial_purity:.3f} (chance {history.chance_purity:.3f})")
        processes = [
            context.Process(target=run_trainer, name=f"trainer-{trainer}",
                            args=(config, url, trainer, messages, epoch_done, token))
            for trainer in range(config.trainers)
        ]
        with running(processes, epoch_done):
            for epoch in range(1, config.epochs + 1):
                examples = len(config.epoch_examples(corpus, epoch)[1])
                losses = _collect_epoch(config, epoch, messages, processes, show_progress,
                                        examples)
                history.batch_loss.extend(losses)
                history.train_loss.append(float(np.mean(losses)))
                history.eval_loss.append(evaluator.loss())
                history.purity.append(evaluator.quality())
                _say(f"epoch {epoch}: train loss {history.train_loss[-1]:.4f}, held-out loss "
                     f"{history.eval_loss[-1]:.4f}, {history.quality} {history.purity[-1]:.3f}")
                epoch_done.wait(WAIT_SECONDS)
        history.neighbours = label_and_show(client, config, corpus)
    return history


def _collect_epoch(config: Word2VecConfig, epoch: int, messages: Any,
                   processes: list[Any], show_progress: bool,
                   examples: int | None = None) -> list[float]:
    """The batch losses of one epoch, until every trainer says it is done with it."""
    total = sum(batches_per_epoch(config, trainer, examples)
                for trainer in range(config.trainers))
    return collect_epoch(total, f"epoch {epoch}/{config.epochs}", config.trainers, messages,
                         processes, show_progress)


def _say(line: str) -> None:
    print(line, flush=True)
