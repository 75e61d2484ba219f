"""Slow, obviously-right implementations to check the service against.

`ReferenceEmbedding` is the plain-numpy layer the project grew from, as it was: forward
W[idx], backward zero dW then np.add.at, SGD W -= lr * dW. `NaiveEmbedding` does the same with
Python loops, element by element, so it shares no numpy shortcut with the service.
"""

from __future__ import annotations

import itertools

import numpy as np


class ReferenceEmbedding:
    def __init__(self, weights: np.ndarray) -> None:
        self.params = [weights]
        self.grads = [np.zeros_like(weights)]
        self.idx: np.ndarray | None = None

    def forward(self, idx: np.ndarray) -> np.ndarray:
        self.idx = idx
        return self.params[0][idx]

    def backward(self, dout: np.ndarray) -> None:
        dW = self.grads[0]
        dW.fill(0)
        np.add.at(dW, self.idx, dout)

    def sgd(self, lr: float) -> None:
        self.params[0] -= lr * self.grads[0]


class NaiveEmbedding:
    """The layer with loops: forward copies row by row, backward adds element by element."""

    def __init__(self, weights: np.ndarray) -> None:
        self.weights = weights.copy()
        self.grad = np.zeros_like(weights)

    def forward(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx)
        dim = self.weights.shape[1]
        out = np.empty((*idx.shape, dim), dtype=self.weights.dtype)
        for position in itertools.product(*(range(n) for n in idx.shape)):
            for d in range(dim):
                out[position + (d,)] = self.weights[int(idx[position]), d]
        return out

    def backward(self, idx: np.ndarray, dout: np.ndarray) -> None:
        """Adds into the gradient (call zero_grad() to start a step afresh)."""
        idx = np.asarray(idx)
        for position in itertools.product(*(range(n) for n in idx.shape)):
            row = int(idx[position])
            for d in range(self.weights.shape[1]):
                self.grad[row, d] += dout[position + (d,)]

    def zero_grad(self) -> None:
        self.grad[...] = 0

    def sgd(self, lr: float) -> None:
        for row in range(self.weights.shape[0]):
            for d in range(self.weights.shape[1]):
                self.weights[row, d] -= lr * self.grad[row, d]
