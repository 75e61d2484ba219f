"""Word2vec CBOW trained by several processes at once, with both tables in the service.

Asynchronous training: every trainer process pushes its gradients with apply=True, so each push
is an SGD step on the rows it touched, as soon as it arrives (Hogwild-style; no trainer waits
for another within an epoch). Trainers pull fresh rows before every batch. The coordinator (the
calling process) creates the tables, shows progress, and at each epoch's end, when every trainer
has finished it, measures a held-out loss and the neighbour purity; then the next epoch starts.
"""

from __future__ import annotations

import math
import multiprocessing
import queue
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from examples.word2vec.corpus import Corpus, NegativeSampler, cbow_examples, make_corpus
from examples.word2vec.metrics import chance_purity, neighbour_purity
from examples.word2vec.model import CBOWNegativeSampling
from examples.word2vec.progress import progress_bar
from service.client import EmbeddingClient, TableExistsError
from service.training import RemoteEmbedding

WAIT_SECONDS = 600.0  # the longest anyone waits for the others at an epoch's end


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

    @property
    def vocab_size(self) -> int:
        return self.num_topics * self.words_per_topic

    @property
    def tables(self) -> tuple[str, str]:
        return f"{self.table_prefix}-in", f"{self.table_prefix}-out"

    def corpus(self) -> Corpus:
        return make_corpus(self.num_topics, self.words_per_topic, self.num_sentences,
                           self.sentence_length, self.noise, self.seed)

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


def create_tables(client: EmbeddingClient, config: Word2VecConfig) -> None:
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
            client.create_table(name, config.vocab_size, config.dim, **options)
        except TableExistsError:
            client.delete_table(name)
            client.create_table(name, config.vocab_size, config.dim, **options)


def batches_per_epoch(config: Word2VecConfig, trainer: int) -> int:
    examples = config.num_sentences * (config.sentence_length - 2 * config.window)
    shard = len(range(trainer, examples, config.trainers))
    return math.ceil(shard / config.batch_size)


def run_trainer(config: Word2VecConfig, url: str, trainer: int, messages: Any,
                epoch_done: Any, token: str | None = None) -> None:
    """One trainer process: its shard of the examples, every epoch, pushing as it goes.
    Sends ("batch", trainer, loss) per batch and ("epoch", trainer, epoch) at each epoch's end,
    then waits at the barrier for the coordinator's evaluation."""
    try:
        corpus = config.corpus()
        contexts, targets = cbow_examples(corpus.sentences, config.window)  # (n, 2w), (n,)
        shard = np.arange(trainer, len(targets), config.trainers)
        rng = np.random.default_rng([config.seed, trainer + 1])
        sampler = NegativeSampler(corpus.word_counts())
        in_table, out_table = config.tables
        with EmbeddingClient(url, token=token) as client:
            model = CBOWNegativeSampling(RemoteEmbedding(client, in_table, apply=True),
                                         RemoteEmbedding(client, out_table, apply=True))
            for epoch in range(1, config.epochs + 1):
                order = rng.permutation(shard)
                for start in range(0, len(order), config.batch_size):
                    batch = order[start:start + config.batch_size]  # (B,)
                    negatives = sampler.sample(rng, (len(batch), config.negatives))  # (B, K)
                    loss = model.forward(contexts[batch], targets[batch], negatives)
                    model.backward()  # two pushes with apply=True: the step happens now
                    messages.put(("batch", trainer, loss))
                messages.put(("epoch", trainer, epoch))
                epoch_done.wait(WAIT_SECONDS)
    except BaseException:
        messages.put(("error", trainer, traceback.format_exc()))
        raise


class Evaluator:
    """The coordinator's measures: the loss on held-out sentences (with negatives drawn once),
    and the neighbour purity of the "in" vectors."""

    def __init__(self, client: EmbeddingClient, config: Word2VecConfig, corpus: Corpus):
        rng = np.random.default_rng([config.seed, 0])
        contexts, targets = cbow_examples(config.held_out_corpus().sentences, config.window)
        self.contexts = contexts[: config.eval_examples]  # (E, 2w)
        self.targets = targets[: config.eval_examples]  # (E,)
        self.negatives = NegativeSampler(corpus.word_counts()).sample(
            rng, (len(self.targets), config.negatives))  # (E, K)
        in_table, out_table = config.tables
        self.in_layer = RemoteEmbedding(client, in_table)
        self.model = CBOWNegativeSampling(self.in_layer, RemoteEmbedding(client, out_table))
        self.topic_of_word = corpus.topic_of_word
        self.neighbours = config.neighbours

    def loss(self) -> float:
        return self.model.forward(self.contexts, self.targets, self.negatives)  # no backward

    def purity(self) -> float:
        vectors = self.in_layer.forward(np.arange(len(self.topic_of_word)))  # (vocab, D)
        return neighbour_purity(vectors, self.topic_of_word, self.neighbours)


def train(config: Word2VecConfig, url: str, show_progress: bool = True,
          token: str | None = None) -> History:
    """Create the tables, run config.trainers trainer processes, report each epoch. `token`:
    the service's bearer token, if it has one (EMBED_TOKEN)."""
    corpus = config.corpus()
    history = History(chance_purity=chance_purity(corpus.topic_of_word))
    context = multiprocessing.get_context("spawn")  # no fork of a process holding sockets
    messages = context.Queue()
    epoch_done = context.Barrier(config.trainers + 1)
    with EmbeddingClient(url, token=token) as client:
        create_tables(client, config)
        evaluator = Evaluator(client, config, corpus)
        history.initial_loss, history.initial_purity = evaluator.loss(), evaluator.purity()
        _say(f"{config.trainers} trainers, {corpus.vocab_size} words in {config.num_topics} "
             f"topics, {config.num_sentences} sentences; before training: held-out loss "
             f"{history.initial_loss:.4f}, purity {history.initial_purity:.3f} "
             f"(chance {history.chance_purity:.3f})")
        processes = [
            context.Process(target=run_trainer, name=f"trainer-{trainer}",
                            args=(config, url, trainer, messages, epoch_done, token))
            for trainer in range(config.trainers)
        ]
        for process in processes:
            process.start()
        try:
            for epoch in range(1, config.epochs + 1):
                losses = _collect_epoch(config, epoch, messages, processes, show_progress)
                history.batch_loss.extend(losses)
                history.train_loss.append(float(np.mean(losses)))
                history.eval_loss.append(evaluator.loss())
                history.purity.append(evaluator.purity())
                _say(f"epoch {epoch}: train loss {history.train_loss[-1]:.4f}, held-out loss "
                     f"{history.eval_loss[-1]:.4f}, neighbour purity {history.purity[-1]:.3f}")
                epoch_done.wait(WAIT_SECONDS)
            for process in processes:
                process.join(WAIT_SECONDS)
        finally:
            epoch_done.abort()  # a trainer still waiting stops instead of hanging
            for process in processes:
                if process.is_alive():
                    process.terminate()
                process.join()
    return history


def _collect_epoch(config: Word2VecConfig, epoch: int, messages: Any,
                   processes: list[Any], show_progress: bool) -> list[float]:
    """The batch losses of one epoch, until every trainer says it is done with it."""
    total = sum(batches_per_epoch(config, trainer) for trainer in range(config.trainers))
    losses: list[float] = []
    finished: set[int] = set()
    with progress_bar(total, f"epoch {epoch}/{config.epochs}", show_progress) as bar:
        while len(finished) < config.trainers:
            try:
                kind, trainer, value = messages.get(timeout=1.0)
            except queue.Empty:
                dead = [p.name for p in processes if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"trainer process died: {', '.join(dead)}") from None
                continue
            if kind == "batch":
                losses.append(value)
                bar.update(1)
            elif kind == "epoch":
                finished.add(trainer)
            else:
                raise RuntimeError(f"trainer {trainer} failed:\n{value}")
    return losses


def _say(line: str) -> None:
    print(line, flush=True)
