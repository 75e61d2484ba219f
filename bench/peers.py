"""The peers bench/compare.py measures the service against, each in its best usual setup, and
the ids and gradients they all get: uniform ids for lookups, Zipf ids for pushes.

- Redis: one key per row ("e:<id>" -> the 256 bytes of the float32 row), redis-py with hiredis,
  MGET of the ids' keys (built before the clock starts: the peer's best case), rows decoded with
  np.frombuffer of the joined values.
- numpy in-process: W[ids] on the same matrix.
- PyTorch in-process: nn.Embedding(V, dim, sparse=True), backward of the pushed gradient and an
  optim.SGD step (the forward that builds the graph runs before the clock starts).
- The dense reference layer: zero a full dW, np.add.at, W -= lr * dW.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

ZIPF_EXPONENT = 1.1


def uniform_ids(rng: np.random.Generator, rows: int, count: int) -> np.ndarray:
    return rng.integers(0, rows, count)  # (count,) int64


def zipf_ids(rng: np.random.Generator, rows: int, count: int) -> np.ndarray:
    """Ids with P(rank k) proportional to 1 / k**1.1, ranks scattered over the table by a fixed
    permutation (the hot rows of a real vocabulary are not rows 0, 1, 2...)."""
    weights = 1.0 / np.arange(1, rows + 1, dtype=np.float64) ** ZIPF_EXPONENT
    cumulative = np.cumsum(weights)
    ranks = np.searchsorted(cumulative, rng.random(count) * cumulative[-1])
    permutation = np.random.default_rng(12345).permutation(rows)
    return permutation[np.minimum(ranks, rows - 1)]  # (count,) int64


def redis_key(row: int) -> bytes:
    return b"e:%d" % row


def load_redis(client: Any, weights: np.ndarray, batch: int = 10_000) -> None:
    """Every row as its own key (256 bytes of float32 for dim 64), pipelined MSETs."""
    pipeline = client.pipeline(transaction=False)
    for start in range(0, len(weights), batch):
        rows = weights[start : start + batch]
        pipeline.mset({redis_key(start + i): rows[i].tobytes() for i in range(len(rows))})
        pipeline.execute()


def redis_lookup(client: Any, keys: list[bytes], dim: int) -> Callable[[], np.ndarray]:
    """MGET of prepared keys, decoded into a (len(keys), dim) float32 array."""

    def lookup() -> np.ndarray:
        values = client.mget(keys)
        return np.frombuffer(b"".join(values), dtype=np.float32).reshape(len(keys), dim)

    return lookup


class TorchSparseSGD:
    """nn.Embedding(sparse=True) + optim.SGD on a copy of the weights: backward + step timed."""

    def __init__(self, weights: np.ndarray, lr: float) -> None:
        import torch

        self.torch = torch
        self.layer = torch.nn.Embedding.from_pretrained(
            torch.from_numpy(weights.copy()), freeze=False, sparse=True
        )
        self.optimizer = torch.optim.SGD(self.layer.parameters(), lr=lr)
        self.version = torch.__version__

    def prepare(self, ids: np.ndarray, grads: np.ndarray) -> Callable[[], None]:
        """The step to time: the forward (graph) is built here, before the clock starts."""
        torch = self.torch
        id_tensor, grad_tensor = torch.from_numpy(ids), torch.from_numpy(grads)
        output = self.layer(id_tensor)

        def step() -> None:
            output.backward(grad_tensor)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

        return step


class DenseReference:
    """The plain-numpy layer the project grew from: a full dW every step."""

    def __init__(self, weights: np.ndarray, lr: float) -> None:
        self.weights = weights.copy()
        self.dW = np.zeros_like(weights)
        self.lr = lr

    def step(self, ids: np.ndarray, grads: np.ndarray) -> None:
        self.dW.fill(0)
        np.add.at(self.dW, ids, grads)
        self.weights -= self.lr * self.dW
