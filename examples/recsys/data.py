"""A click log with planted structure, Zipf-distributed users and items, and hashed 64-bit ids.

The structure a model can find: items belong to `topics` topics, each user has a home topic
and clicks items of it (a share `noise` of clicks go to any topic). Within a topic, items are
Zipf-popular; users are Zipf-active (a few click a lot, most a little). So the most popular
items overall are a poor guess for a user; the popular items of the user's own topic are a good
one, and a factorization of the log can learn which topic a user's clicks come from.

Ids are what a real log has: 64-bit hashes (splitmix64 of the index and a salt), spread over the
whole uint64 range, half of them above 2**63 - 1. The service's dynamic tables take them as they
are (uint64, the int64 of the same bits); nothing maps them to 0..n-1.

The held-out set is each user's last click (users with at least two); the rest is training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GOLDEN = 0x9E3779B97F4A7C15


def hashed(indices: np.ndarray, salt: int) -> np.ndarray:
    """(n,) uint64: splitmix64's output for each index (a bijection: no two collide)."""
    offset = np.uint64(((salt + 1) * GOLDEN) % 2**64)
    z = indices.astype(np.uint64) + offset
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@dataclass(frozen=True)
class ClickLog:
    users: np.ndarray  # (n,) user index of each click, in time order
    items: np.ndarray  # (n,) item index
    user_keys: np.ndarray  # (users,) uint64 hashed id of each user index
    item_keys: np.ndarray  # (items,) uint64
    train: np.ndarray  # (t,) positions of the training clicks
    held_out: np.ndarray  # (h,) positions of the held-out clicks (each user's last)

    @property
    def num_items(self) -> int:
        return len(self.item_keys)

    def train_counts(self) -> np.ndarray:
        """(items,) training clicks per item: the popularity baseline's ranking."""
        return np.bincount(self.items[self.train], minlength=self.num_items)


def make_log(num_users: int, num_items: int, topics: int, clicks: int, noise: float,
             seed: int) -> ClickLog:
    rng = np.random.default_rng(seed)
    item_topic = np.arange(num_items) % topics
    popularity = 1.0 / (np.arange(num_items) // topics + 1.0) ** 1.1  # Zipf within a topic
    user_topic = rng.integers(0, topics, num_users)
    activity = 1.0 / (rng.permutation(num_users) + 1.0) ** 0.8  # Zipf users
    users = rng.choice(num_users, clicks, p=activity / activity.sum())
    own = rng.random(clicks) >= noise
    topic = np.where(own, user_topic[users], rng.integers(0, topics, clicks))  # (n,)
    items = np.empty(clicks, dtype=np.int64)
    for k in range(topics):
        chosen = topic == k
        candidates = np.flatnonzero(item_topic == k)
        weights = popularity[candidates] / popularity[candidates].sum()
        items[chosen] = rng.choice(candidates, int(chosen.sum()), p=weights)
    last = np.full(num_users, -1)
    last[users] = np.arange(clicks)  # the last click of each user (later positions win)
    counts = np.bincount(users, minlength=num_users)
    held_out = np.sort(last[(counts >= 2)])
    train = np.setdiff1d(np.arange(clicks), held_out)
    return ClickLog(users, items, hashed(np.arange(num_users), seed * 2 + 1),
                    hashed(np.arange(num_items), seed * 2 + 2), train, held_out)
