"""CBOW with negative sampling, forward and backward written out in numpy.

The model owns no weights: it is given two embedding layers (anything with the reference
layer's `forward(idx)` / `backward(dout)`, local or remote), "in" for context words and "out"
for predicted words. For a batch of B examples with window w, K negatives and dimension D:

    h      = mean over the 2w context rows of W_in          (B, D)
    scores = h . W_out[target or negative]                  (B, 1 + K)
    loss   = mean over B of [ -log sigmoid(score of target) - sum_K log sigmoid(-score of neg) ]

Backward: with labels 1 for the target and 0 for negatives, d loss / d scores =
(sigmoid(scores) - labels) / B; the chain rule through the dot product and the mean gives the
gradients of the looked-up rows, which the layers scatter-add into their tables.

Two update rules for the context rows: "mean", the exact gradient of the mean (each of the 2w
rows gets 1/2w of the hidden layer's gradient, as the book's CBOW), and "word2vec", where each
context row gets the whole hidden-layer gradient (word2vec.c's cbow_mean=1 does this: 2w times
the exact step for the input vectors).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class EmbeddingLayer(Protocol):
    def forward(self, idx: np.ndarray) -> np.ndarray: ...

    def backward(self, dout: np.ndarray) -> None: ...


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warning for large |x|


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)), computed without overflow."""
    return np.logaddexp(0.0, x)


class CBOWNegativeSampling:
    """word2vec's CBOW: predict a word from the mean of its context, against K negatives."""

    def __init__(
        self, in_layer: EmbeddingLayer, out_layer: EmbeddingLayer, context_update: str = "mean"
    ) -> None:
        if context_update not in ("mean", "word2vec"):
            raise ValueError(f"context_update must be 'mean' or 'word2vec', got {context_update!r}")
        self.in_layer = in_layer
        self.out_layer = out_layer
        self.context_update = context_update
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int] | None = None

    def forward(self, contexts: np.ndarray, targets: np.ndarray, negatives: np.ndarray) -> float:
        """contexts (B, 2w), targets (B,), negatives (B, K) word ids; returns the mean loss."""
        context_rows = self.in_layer.forward(contexts)  # (B, 2w, D)
        hidden = context_rows.mean(axis=1)  # (B, D)
        predicted = np.concatenate([targets[:, None], negatives], axis=1)  # (B, 1 + K)
        output_rows = self.out_layer.forward(predicted)  # (B, 1 + K, D)
        scores = np.einsum("bd,bkd->bk", hidden, output_rows)  # (B, 1 + K)
        labels = np.zeros_like(scores)  # (B, 1 + K)
        labels[:, 0] = 1.0
        # -log sigmoid(s) = softplus(-s) for the target; -log sigmoid(-s) = softplus(s) otherwise
        losses = np.where(labels == 1.0, softplus(-scores), softplus(scores))  # (B, 1 + K)
        self._cache = (hidden, output_rows, scores, labels, contexts.shape[1])
        return float(losses.sum(axis=1).mean())

    def backward(self) -> None:
        """Push d loss / d rows into both layers (call after forward)."""
        if self._cache is None:
            raise RuntimeError("backward() needs a forward() first")
        hidden, output_rows, scores, labels, context_width = self._cache
        batch = scores.shape[0]
        dscores = (sigmoid(scores) - labels) / batch  # (B, 1 + K)
        doutput_rows = dscores[:, :, None] * hidden[:, None, :]  # (B, 1 + K, D)
        dhidden = np.einsum("bk,bkd->bd", dscores, output_rows)  # (B, D)
        share = 1.0 / context_width if self.context_update == "mean" else 1.0
        dcontext_rows = np.repeat(dhidden[:, None, :] * share, context_width, axis=1)
        # (B, 2w, D): the mean sends each context row 1/2w of the hidden gradient ("mean"), or
        # word2vec.c's rule gives each the whole of it ("word2vec")
        self.out_layer.backward(doutput_rows.astype(output_rows.dtype, copy=False))
        self.in_layer.backward(dcontext_rows.astype(hidden.dtype, copy=False))
        self._cache = None
