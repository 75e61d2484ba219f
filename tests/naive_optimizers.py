"""Independent oracles for the optimizers: Python loops over a dense table, and PyTorch.

`NaiveTrainer` keeps a dense (num_embeddings, dim) table and dense optimizer state and does every
step element by element in Python floats: a dense gradient summed push by push, a touched-row
mask, then the textbook rule on each touched element. It shares no code and no numpy shortcut
with service.core. `TorchTrainer` is torch.nn.Embedding(sparse=True) with torch.optim.SGD,
Adagrad or SparseAdam, the rules the service claims to equal.

Both take the same calls as an EmbeddingTable: push(ids, grads) and apply(lr, average); push with
apply=True is one step of that push alone (asynchronous mode).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

DEFAULTS: dict[str, dict[str, float]] = {
    "sgd": {"lr": 0.01},
    "momentum": {"lr": 0.01, "momentum": 0.9},
    "adagrad": {"lr": 0.01, "eps": 1e-10, "initial_accumulator_value": 0.0},
    "adam": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
}


class NaiveTrainer:
    """The optimizers as loops over elements (float64)."""

    def __init__(self, weights: np.ndarray, config: dict[str, Any]) -> None:
        self.kind = config.get("kind", "sgd")
        self.params = {**DEFAULTS[self.kind], **{k: v for k, v in config.items() if k != "kind"}}
        self.weights = weights.astype(np.float64)  # a copy
        shape = self.weights.shape
        fill = self.params.get("initial_accumulator_value", 0.0)
        self.state = {
            "sgd": {},
            "momentum": {"velocity": np.zeros(shape)},
            "adagrad": {"sum_squares": np.full(shape, fill)},
            "adam": {"exp_avg": np.zeros(shape), "exp_avg_sq": np.zeros(shape)},
        }[self.kind]
        self.step = 0
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []

    def push(self, ids: np.ndarray, grads: np.ndarray, apply: bool = False) -> None:
        if apply:
            self._step([(ids, grads)], self.params["lr"], average=False)
        else:
            self.pending.append((ids, grads))

    def apply(self, lr: float | None = None, average: bool = False) -> None:
        pushes, self.pending = self.pending, []
        self._step(pushes, self.params["lr"] if lr is None else lr, average)

    def _step(self, pushes: list[tuple[np.ndarray, np.ndarray]], lr: float, average: bool) -> None:
        num_rows, dim = self.weights.shape
        gradient = [[0.0] * dim for _ in range(num_rows)]
        touched = [False] * num_rows
        for ids, grads in pushes:
            flat_grads = grads.reshape(-1, dim)
            for j, row in enumerate(ids.reshape(-1).tolist()):
                touched[row] = True
                for column in range(dim):
                    gradient[row][column] += float(flat_grads[j, column])
        if not any(touched):
            return
        self.step += 1
        for row in range(num_rows):
            if not touched[row]:
                continue
            for column in range(dim):
                g = gradient[row][column]
                if average:
                    g = g / len(pushes)
                self._update(row, column, g, lr)

    def _update(self, row: int, column: int, g: float, lr: float) -> None:
        p, w, s = self.params, self.weights, self.state
        if self.kind == "sgd":
            w[row, column] = w[row, column] - lr * g
        elif self.kind == "momentum":
            v = p["momentum"] * s["velocity"][row, column] - lr * g
            s["velocity"][row, column] = v
            w[row, column] = w[row, column] + v
        elif self.kind == "adagrad":
            h = s["sum_squares"][row, column] + g * g
            s["sum_squares"][row, column] = h
            w[row, column] = w[row, column] - lr * g / (math.sqrt(h) + p["eps"])
        else:
            beta1, beta2, t = p["beta1"], p["beta2"], self.step
            m = beta1 * s["exp_avg"][row, column] + (1 - beta1) * g
            v = beta2 * s["exp_avg_sq"][row, column] + (1 - beta2) * g * g
            s["exp_avg"][row, column], s["exp_avg_sq"][row, column] = m, v
            # Adam as PyTorch documents it, eps added to the uncorrected sqrt(v)
            step_size = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
            w[row, column] = w[row, column] - step_size * m / (math.sqrt(v) + p["eps"])


class TorchTrainer:
    """torch.nn.Embedding(sparse=True) + the torch optimizer with the same rule (float64)."""

    STATE_NAMES = {"adagrad": {"sum_squares": "sum"},
                   "adam": {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}, "sgd": {}}

    def __init__(self, weights: np.ndarray, config: dict[str, Any]) -> None:
        import torch

        self.torch = torch
        self.kind = config.get("kind", "sgd")
        p = {**DEFAULTS[self.kind], **{k: v for k, v in config.items() if k != "kind"}}
        self.layer = torch.nn.Embedding.from_pretrained(
            torch.tensor(weights, dtype=torch.float64), freeze=False, sparse=True
        )
        params = self.layer.parameters()
        if self.kind == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=p["lr"])
        elif self.kind == "adagrad":
            self.optimizer = torch.optim.Adagrad(
                params, lr=p["lr"], eps=p["eps"],
                initial_accumulator_value=p["initial_accumulator_value"],
            )
        elif self.kind == "adam":
            self.optimizer = torch.optim.SparseAdam(
                params, lr=p["lr"], betas=(p["beta1"], p["beta2"]), eps=p["eps"]
            )
        else:
            raise ValueError(f"torch has no sparse {self.kind!r} with the service's rule")
        self.default_lr = p["lr"]

    @property
    def weights(self) -> np.ndarray:
        return self.layer.weight.detach().numpy().copy()

    @property
    def state(self) -> dict[str, np.ndarray]:
        torch_state = self.optimizer.state[self.layer.weight]
        return {ours: torch_state[theirs].numpy().copy()
                for ours, theirs in self.STATE_NAMES[self.kind].items() if theirs in torch_state}

    def push(self, ids: np.ndarray, grads: np.ndarray, apply: bool = False) -> None:
        rows = self.layer(self.torch.from_numpy(ids.astype(np.int64)))
        rows.backward(self.torch.from_numpy(grads.astype(np.float64)))
        if apply:
            self.apply()

    def apply(self, lr: float | None = None, average: bool = False) -> None:
        assert not average, "average: divide the pushed grads instead"
        for group in self.optimizer.param_groups:
            group["lr"] = self.default_lr if lr is None else lr
        # Explicitly off (torch warns when the choice is left implicit); the grads are built by
        # torch itself, so they satisfy the invariants.
        with self.torch.sparse.check_sparse_tensor_invariants(enable=False):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
