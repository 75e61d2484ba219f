"""The held-out metric: hit rate at k (the held-out click among a user's k best-scored items,
the items the user clicked in training left out), for the model and for the popularity
baseline (every user gets the most clicked items), with chance (k / items) beside them."""

from __future__ import annotations

import numpy as np

from examples.recsys.data import ClickLog
from service.client import EmbeddingClient


def hit_rate(scores: np.ndarray, log: ClickLog, k: int) -> float:
    """scores (h, items): one row per held-out click, in log.held_out's order."""
    users = log.users[log.held_out]
    scores = scores.astype(np.float64, copy=True)
    trained = np.isin(log.users[log.train], users)
    row_of_user = {int(user): row for row, user in enumerate(users)}
    rows = np.array([row_of_user[int(user)] for user in log.users[log.train][trained]])
    scores[rows, log.items[log.train][trained]] = -np.inf  # what the user already clicked
    top = np.argpartition(-scores, k, axis=1)[:, :k]  # (h, k)
    return float((top == log.items[log.held_out][:, None]).any(axis=1).mean())


def popularity_hit_rate(log: ClickLog, k: int) -> float:
    counts = log.train_counts().astype(np.float64)
    return hit_rate(np.tile(counts, (len(log.held_out), 1)), log, k)


def model_hit_rate(client: EmbeddingClient, tables: tuple[str, str], log: ClickLog,
                   k: int) -> float:
    """The model's hit rate, its vectors read from the service by hashed id."""
    users = client.lookup(tables[0], log.user_keys[log.users[log.held_out]])  # (h, dim)
    items = client.lookup(tables[1], log.item_keys)  # (items, dim)
    return hit_rate(users @ items.T, log, k)
