"""Optimizer steps on a set of rows, refused whole when a new value would not be finite.

Each step updates `rows` (k distinct indices into the weight and state arrays, any order) from
their summed gradient `grads` (k, dim), and returns True; or, if any new weight or state value
would be inf or NaN, writes nothing and returns False (`new_rows` then says which, for the error
message: service.core.optimizers). The compiled loop makes one pass per row that computes the
new values and only checks them, then, if all are finite, a second pass over the same (now
cached) rows that computes them again and writes them: no (k, dim) temporaries. (Writing first
and undoing on a refusal would be one pass less, but a snapshot streams the live arrays without
the table's lock, service.core.snapshots, and could save a value that was never kept.) The
numpy twin gathers the rows (np.take), computes the new rows with in-place array operations,
checks them and writes them back.

The arithmetic, the same expressions in the same order in both (so the results are
bit-identical), all in the arrays' dtype; hyper-parameters arrive as scalars of that dtype:

- sgd:      w' = w - lr * g
- momentum: v' = v * momentum - lr * g;  w' = w + v'
- adagrad:  h' = h + g * g;  w' = w - (g / (sqrt(h') + eps)) * lr
- adam:     m' = m + (g - m) * (1 - beta1);  s' = s + (g * g - s) * (1 - beta2)
            w' = w - (m' / (sqrt(s') + eps)) * step_size

Arrays are C-contiguous: weights and state (n, dim) of one float dtype, rows (k,) int64, grads
(k, dim) of the same dtype. `arrays` of each step, in parameter order, are what `new_rows`
returns, in that order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from service.core.kernels.backend import Kernel, array
from service.core.kernels.scatter import FLOATS


@dataclass(frozen=True)
class Step:
    """A step kernel, the arrays it writes and the scalars it takes (by name, in parameter
    order), and its numpy rule."""

    kernel: Kernel
    arrays: tuple[str, ...]
    constants: tuple[str, ...]
    new_rows: Callable[..., tuple[np.ndarray, ...]]  # same arguments -> the new rows


def _write_if_finite(targets: tuple[np.ndarray, ...], rows: np.ndarray,
                     new: tuple[np.ndarray, ...]) -> bool:
    if not all(np.isfinite(values).all() for values in new):
        return False
    for target, values in zip(targets, new, strict=True):
        target[rows] = values
    return True


def _signatures(scalars: int, states: int) -> Callable[[ModuleType], list[Any]]:
    def build(types: ModuleType) -> list[Any]:
        return [types.boolean(*[array(types, dtype, 2)] * (1 + states),
                              array(types, "int64", 1, readonly=True),
                              array(types, dtype, 2, readonly=True),
                              *[getattr(types, dtype)] * scalars)
                for dtype in FLOATS]

    return build


# -- sgd ------------------------------------------------------------------------------------------
def _sgd_new(weights: np.ndarray, rows: np.ndarray, grads: np.ndarray, lr: Any
             ) -> tuple[np.ndarray, ...]:
    with np.errstate(all="ignore"):  # overflow is what the caller checks for
        new_weights = np.take(weights, rows, axis=0)  # (k, dim)
        new_weights -= lr * grads
    return (new_weights,)


def _sgd_numpy(weights: np.ndarray, rows: np.ndarray, grads: np.ndarray, lr: Any) -> bool:
    return _write_if_finite((weights,), rows, _sgd_new(weights, rows, grads, lr))


def _sgd_loop(weights: np.ndarray, rows: np.ndarray, grads: np.ndarray, lr: Any) -> bool:
    dim = weights.shape[1]
    probe = np.zeros(dim, dtype=weights.dtype)  # (dim,) x - x: NaN where x is not finite
    for i in range(rows.shape[0]):
        row = rows[i]
        for column in range(dim):
            new_weight = weights[row, column] - lr * grads[i, column]
            probe[column] += new_weight - new_weight
    if np.isnan(probe.sum()):
        return False
    for i in range(rows.shape[0]):
        row = rows[i]
        for column in range(dim):
            weights[row, column] = weights[row, column] - lr * grads[i, column]
    return True


SGD = Step(Kernel("sgd_step", numpy=_sgd_numpy, loop=_sgd_loop, signatures=_signatures(1, 0)),
           ("weights",), ("lr",), _sgd_new)


# -- momentum -------------------------------------------------------------------------------------
def _momentum_new(weights: np.ndarray, velocity: np.ndarray, rows: np.ndarray,
                  grads: np.ndarray, lr: Any, momentum: Any) -> tuple[np.ndarray, ...]:
    with np.errstate(all="ignore"):
        new_velocity = np.take(velocity, rows, axis=0)  # (k, dim)
        new_velocity *= momentum
        new_velocity -= lr * grads
        new_weights = np.take(weights, rows, axis=0)
        new_weights += new_velocity
    return new_weights, new_velocity


def _momentum_numpy(weights: np.ndarray, velocity: np.ndarray, rows: np.ndarray,
                    grads: np.ndarray, lr: Any, momentum: Any) -> bool:
    new = _momentum_new(weights, velocity, rows, grads, lr, momentum)
    return _write_if_finite((weights, velocity), rows, new)


def _momentum_loop(weights: np.ndarray, velocity: np.ndarray, rows: np.ndarray,
                   grads: np.ndarray, lr: Any, momentum: Any) -> bool:
    dim = weights.shape[1]
    probe = np.zeros(dim, dtype=weights.dtype)
    for i in range(rows.shape[0]):
        row = rows[i]
        for column in range(dim):
            new_velocity = velocity[row, column] * momentum - lr * grads[i, column]
            new_weight = weights[row, column] + new_velocity
            probe[column] += (new_velocity - new_velocity) + (new_weight - new_weight)
    if np.isnan(probe.sum()):
        return False
    for i in range(rows.shape[0]):
        row = rows[i]
        for column in range(dim):
            new_velocity = velocity[row, column] * momentum - lr * grads[i, column]
            velocity[row, column] = new_velocity
            weights[row, column] = weights[row, column] + new_velocity
    return True


MOMENTUM = Step(Kernel("momentum_step", numpy=_momentum_numpy, loop=_momentum_loop,
                       signatures=_signatures(2, 1)), ("weights", "velocity"),
                ("lr", "momentum"), _momentum_new)


# -- adagrad --------------------------------------------------------------------------------------
def _adagrad_new(weights: np.ndarray, sum_squares: np.ndarray, rows: np.ndarray,
                 grads: np.ndarray, lr: Any, eps: Any) -> tuple[np.ndarray, ...]:
    with np.errstate(all="ignore"):
        new_sum_squares = np.take(sum_squares, rows, axis=0)  # (k, dim)
        new_sum_squares += grads * grads
        scaled = np.sqrt(new_sum_squares)
        scaled += eps
        np.divide(grads, scaled, out=scaled)
        scaled *= lr
        new_weights = np.take(weights, rows, axis=0)
        new_weights -= scaled
    return new_weights, new_sum_squares


def _adagrad_numpy(weights: np.ndarray, sum_squares: np.ndarray, rows: np.ndarray,
                   grads: np.ndarray, lr: Any, eps: Any) -> bool:
    new = _adagrad_new(weights, sum_squares, rows, grads, lr, eps)
    return _write_if_finite((weights, sum_squares), rows, new)


def _adagrad_loop(weights: np.ndarray, sum_squares: np.ndarray, rows: np.ndarray,
                  grads: np.ndarray, lr: Any, eps: Any) -> bool:
    dim = weights.shape[1]
    probe = np.zeros(dim, dtype=weights.dtype)
    for i in range(rows.shape[0]):
        row = rows[i]
        for column in range(dim):
            grad = grads[i, column]
            new_sum = sum_squares[row, column] + grad * grad
            new_weight = weights[row, column] - (grad / (np.sqrt(new_sum) + eps)) * lr
            probe[column] += (new_sum - new_sum) + (new_weight - new_weight)
    if np.isnan(probe.sum()):
        return False
    for i in range(rows.shape[0]):
        row = rows[i]
        for column in range(dim):
            grad = grads[i, column]
            new_sum = sum_squares[row, column] + grad * grad
            sum_squares[row, column] = new_sum
            weights[row, column] = weights[row, column] - (grad / (np.sqrt(new_sum) + eps)) * lr
    return True


ADAGRAD = Step(Kernel("adagrad_step", numpy=_adagrad_numpy, loop=_adagrad_loop,
                      signatures=_signatures(2, 1)), ("weights", "sum_squares"),
               ("lr", "eps"), _adagrad_new)


# -- adam -----------------------------------------------------------------------------------------
def _adam_new(weights: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
              rows: np.ndarray, grads: np.ndarray, step_size: Any, one_minus_beta1: Any,
              one_minus_beta2: Any, eps: Any) -> tuple[np.ndarray, ...]:
    with np.errstate(all="ignore"):
        new_exp_avg = np.take(exp_avg, rows, axis=0)  # (k, dim)
        new_exp_avg += (grads - new_exp_avg) * one_minus_beta1
        new_exp_avg_sq = np.take(exp_avg_sq, rows, axis=0)
        new_exp_avg_sq += (grads * grads - new_exp_avg_sq) * one_minus_beta2
        scaled = np.sqrt(new_exp_avg_sq)
        scaled += eps
        np.divide(new_exp_avg, scaled, out=scaled)
        scaled *= step_size
        new_weights = np.take(weights, rows, axis=0)
        new_weights -= scaled
    return new_weights, new_exp_avg, new_exp_avg_sq


def _adam_numpy(weights: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
                rows: np.ndarray, grads: np.ndarray, step_size: Any, one_minus_beta1: Any,
                one_minus_beta2: Any, eps: Any) -> bool:
    new = _adam_new(weights, exp_avg, exp_avg_sq, rows, grads, step_size, one_minus_beta1,
                    one_minus_beta2, eps)
    return _write_if_finite((weights, exp_avg, exp_avg_sq), rows, new)


def _adam_loop(weights: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
               rows: np.ndarray, grads: np.ndarray, step_size: Any, one_minus_beta1: Any,
               one_minus_beta2: Any, eps: Any) -> bool:
    dim = weights.shape[1]
    probe = np.zeros(dim, dtype=weights.dtype)
    for i in range(rows.shape[0]):
        row = rows[i]
        for column in range(dim):
            grad = grads[i, column]
            average = exp_avg[row, column]
            new_average = average + (grad - average) * one_minus_beta1
            square = exp_avg_sq[row, column]
            new_square = square + (grad * grad - square) * one_minus_beta2
            new_weight = weights[row, column] - (
                new_average / (np.sqrt(new_square) + eps)) * step_size
            probe[column] += ((new_average - new_average) + (new_square - new_square)
                              + (new_weight - new_weight))
    if np.isnan(probe.sum()):
        return False
    for i in range(rows.shape[0]):
        row = rows[i]
        for column in range(dim):
            grad = grads[i, column]
            average = exp_avg[row, column]
            new_average = average + (grad - average) * one_minus_beta1
            square = exp_avg_sq[row, column]
            new_square = square + (grad * grad - square) * one_minus_beta2
            exp_avg[row, column] = new_average
            exp_avg_sq[row, column] = new_square
            weights[row, column] = weights[row, column] - (
                new_average / (np.sqrt(new_square) + eps)) * step_size
    return True


ADAM = Step(Kernel("adam_step", numpy=_adam_numpy, loop=_adam_loop,
                   signatures=_signatures(4, 2)), ("weights", "exp_avg", "exp_avg_sq"),
            ("step_size", "one_minus_beta1", "one_minus_beta2", "eps"), _adam_new)

__all__ = ["ADAGRAD", "ADAM", "MOMENTUM", "SGD", "Step"]
