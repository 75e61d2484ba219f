"""BPR on a click log with hashed ids, by several trainer processes, both tables in the service.

The "users" and "items" tables are dynamic: created without a size, they make a row for each
hashed id the trainers push (items only once they were clicked in `admit_after` pushes: one-off
ids never get a row), and keep at most `capacity` rows each. The trainers never map ids to
0..n-1: what they send is the log's 64-bit ids (uint64).

Asynchronous training, as in the word2vec example: every trainer pushes its gradients with
apply=True (each push an adagrad step of the rows it touched), pulling fresh rows before every
batch. The coordinator (the calling process) creates the tables, shows progress, and at each
epoch's end, when every trainer has finished it, measures the held-out hit rate against the
popularity baseline; then the next epoch starts.
"""

from __future__ import annotations

import math
import multiprocessing
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from examples.recsys.data import ClickLog, make_log
from examples.recsys.evaluate import model_hit_rate, popularity_hit_rate
from examples.recsys.model import BPR
from examples.trainers import WAIT_SECONDS, collect_epoch, end_epoch, reporting, running
from service.client import EmbeddingClient, TableExistsError
from service.training import RemoteEmbedding


@dataclass(frozen=True)
class RecsysConfig:
    users: int = 3000
    items: int = 1500
    topics: int = 10
    clicks: int = 60_000
    noise: float = 0.1  # share of clicks on any topic
    dim: int = 32
    batch_size: int = 256
    epochs: int = 6
    lr: float = 0.1  # adagrad on both tables
    reg: float = 1e-3
    trainers: int = 2
    seed: int = 0
    k: int = 10  # hit rate at k
    admit_after: int = 2  # items: clicks (pushes) before an item gets a row
    capacity: int = 1_000_000  # rows each table keeps at most
    table_prefix: str = "recsys"

    @property
    def tables(self) -> tuple[str, str]:
        return f"{self.table_prefix}-users", f"{self.table_prefix}-items"

    def log(self) -> ClickLog:
        return make_log(self.users, self.items, self.topics, self.clicks, self.noise,
                        self.seed)


@dataclass
class History:
    chance: float  # k / items: a random ranking's hit rate
    popularity: float  # the most clicked items for everyone
    initial: float = math.nan  # the model's hit rate before training
    hit_rate: list[float] = field(default_factory=list)  # after each epoch
    train_loss: list[float] = field(default_factory=list)  # mean batch loss of each epoch
    batch_loss: list[float] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)  # live rows of each table at the end


def create_tables(client: EmbeddingClient, config: RecsysConfig) -> None:
    """Both tables dynamic; an existing table of the same name is replaced (a rerun starts
    afresh)."""
    admission = (1, config.admit_after)  # users: a row at their first click
    for name, admit_after in zip(config.tables, admission, strict=True):
        options: dict[str, Any] = dict(
            embedding_dim=config.dim, seed=config.seed, init={"kind": "normal", "std": 0.1},
            optimizer={"kind": "adagrad", "lr": config.lr},
            dynamic={"capacity": config.capacity, "admit_after": admit_after})
        try:
            client.create_table(name, **options)
        except TableExistsError:
            client.delete_table(name)
            client.create_table(name, **options)


def run_trainer(config: RecsysConfig, url: str, trainer: int, messages: Any,
                epoch_done: Any, token: str | None = None) -> None:
    """One trainer process: its shard of the training clicks, every epoch, pushing as it goes."""
    with reporting(messages, trainer):
        log = config.log()
        rng = np.random.default_rng([config.seed, trainer + 1])
        shard = log.train[trainer :: config.trainers]
        with EmbeddingClient(url, token=token) as client:
            users, items = (RemoteEmbedding(client, name, apply=True) for name in config.tables)
            model = BPR(users, items, config.reg)
            for epoch in range(1, config.epochs + 1):
                order = rng.permutation(shard)
                for start in range(0, len(order), config.batch_size):
                    batch = order[start : start + config.batch_size]  # (B,) click positions
                    other = rng.integers(0, log.num_items, len(batch))  # (B,) random items
                    loss = model.step(log.user_keys[log.users[batch]],
                                      log.item_keys[log.items[batch]], log.item_keys[other])
                    messages.put(("batch", trainer, loss))
                end_epoch(messages, trainer, epoch, epoch_done)


def train(config: RecsysConfig, url: str, show_progress: bool = True,
          token: str | None = None) -> History:
    """Create the tables, run config.trainers trainer processes, report each epoch."""
    log = config.log()
    context = multiprocessing.get_context("spawn")  # no fork of a process holding sockets
    messages = context.Queue()
    epoch_done = context.Barrier(config.trainers + 1)
    batches = sum(math.ceil(len(log.train[trainer :: config.trainers]) / config.batch_size)
                  for trainer in range(config.trainers))
    with EmbeddingClient(url, token=token) as client:
        create_tables(client, config)
        history = History(chance=config.k / config.items,
                          popularity=popularity_hit_rate(log, config.k))
        history.initial = model_hit_rate(client, config.tables, log, config.k)
        print(f"{len(log.users)} clicks of {config.users} users on {config.items} items "
              f"(hashed 64-bit ids), {len(log.held_out)} held out; hit rate at {config.k}: "
              f"chance {history.chance:.3f}, popularity {history.popularity:.3f}, untrained "
              f"{history.initial:.3f}", flush=True)
        processes = [context.Process(target=run_trainer, name=f"trainer-{trainer}",
                                     args=(config, url, trainer, messages, epoch_done, token))
                     for trainer in range(config.trainers)]
        with running(processes, epoch_done):
            for epoch in range(1, config.epochs + 1):
                losses = collect_epoch(batches, f"epoch {epoch}/{config.epochs}",
                                       config.trainers, messages, processes, show_progress)
                history.batch_loss.extend(losses)
                history.train_loss.append(float(np.mean(losses)))
                history.hit_rate.append(model_hit_rate(client, config.tables, log, config.k))
                print(f"epoch {epoch}: train loss {history.train_loss[-1]:.4f}, hit rate at "
                      f"{config.k} {history.hit_rate[-1]:.3f} (popularity "
                      f"{history.popularity:.3f})", flush=True)
                epoch_done.wait(WAIT_SECONDS)
        history.rows = {name: client.get_table(name).rows or 0 for name in config.tables}
    return history
