"""Sparse optimizer steps: each updates only the rows that received gradient.

Every optimizer keeps its state as per-row arrays the shape of the weights (velocity, squared
gradient sums, moments) and touches only `rows` of them, so an apply costs O(len(rows) * dim)
whatever the table size. Rules:

- sgd:      W -= lr * g                                    (the reference layer's step)
- momentum: v = momentum * v - lr * g;  W += v             (lazy: untouched rows keep their v)
- adagrad:  h += g * g;  W -= lr * g / (sqrt(h) + eps)     (= torch.optim.Adagrad, sparse grads)
- adam:     m += (1 - beta1) * (g - m);  s += (1 - beta2) * (g * g - s)
            W -= lr * sqrt(1 - beta2**t) / (1 - beta1**t) * m / (sqrt(s) + eps)
            lazy: only rows with gradient move; t = the table's step (= torch.optim.SparseAdam)

`step` (t) counts the table's optimizer steps: every apply that had something pending and every
asynchronous push, this one included (1 on the first).

The interface, for any caller that keeps rows in (n, dim) arrays (fixed tables, and tables whose
rows are made on first use):

    optimizer.update(weights, state, rows, grads, lr, step)

updates weights[rows] and every state[name][rows] in place: `rows` (k,) are distinct indices
into those arrays, in any order; `grads` (k, dim) their summed gradients. The arithmetic is one
kernel per rule (service.core.kernels.steps: compiled, or numpy), in the arrays' dtype. If any
new weight or state value would be inf or NaN, nothing is written and InvalidRequest names the
first such row (its position in `rows` and its index) and array.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import Field, asdict, dataclass, fields
from typing import Any, ClassVar

import numpy as np

from service.core import kernels
from service.core.errors import InvalidRequest


def scalar(value: float, dtype: np.dtype) -> Any:
    """`value` as a scalar of `dtype`; beyond its range, inf (an lr too large for float32: the
    step then refuses), without numpy's overflow warning."""
    largest = float(np.finfo(dtype).max)
    if -largest <= value <= largest or not math.isfinite(value):
        return dtype.type(value)
    return dtype.type(math.copysign(math.inf, value))


class Optimizer(ABC):
    """A rule for updating rows of a table from their summed gradient."""

    kind: ClassVar[str]
    state_names: ClassVar[tuple[str, ...]] = ()
    rule: ClassVar[kernels.Step]  # its kernel; rule.arrays == ("weights", *state_names)
    lr: float
    # every concrete optimizer is a dataclass (asdict and fields read its hyper-parameters)
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def init_state(self, shape: tuple[int, int], dtype: np.dtype) -> dict[str, np.ndarray]:
        return {name: np.zeros(shape, dtype=dtype) for name in self.state_names}

    @abstractmethod
    def constants(self, lr: float, step: int) -> tuple[float, ...]:
        """The rule's scalar arguments after the arrays (see service.core.kernels.steps)."""

    def update(
        self,
        weights: np.ndarray,
        state: dict[str, np.ndarray],
        rows: np.ndarray,
        grads: np.ndarray,
        lr: float,
        step: int,
    ) -> None:
        """Update weights[rows] (and state[*][rows]) in place: rows (k,) distinct, grads (k, dim).
        `step` is the table's step count including this step (1 on the first). weights and the
        state arrays are C-contiguous (n, dim) arrays of one float dtype. InvalidRequest, with
        nothing changed, if a new value would not be finite."""
        arrays, rows, grads, constants = self._arguments(weights, state, rows, grads, lr, step)
        if self.rule.kernel(*arrays, rows, grads, *constants):
            return
        self.check_update(weights, state, rows, grads, lr, step)  # raises, naming the row
        raise RuntimeError(f"the {self.kind} kernel refused a step its numpy twin accepts")

    def check_update(
        self,
        weights: np.ndarray,
        state: dict[str, np.ndarray],
        rows: np.ndarray,
        grads: np.ndarray,
        lr: float,
        step: int,
        names: np.ndarray | None = None,
    ) -> None:
        """What update would refuse, without writing anything: InvalidRequest if a new value
        of the step would not be finite, naming the row as `names[position]` (names: (k,) what
        the caller calls rows[i], such as a cluster shard's global ids; default rows). A shard
        checks its part of a table-wide step with this before any shard writes (two-phase:
        service.cluster), so that a refused step changes no shard."""
        arrays, rows, grads, constants = self._arguments(weights, state, rows, grads, lr, step)
        new = self.rule.new_rows(*arrays, rows, grads, *constants)  # (k, dim) each
        finite = [np.isfinite(values).all(axis=1) for values in new]  # (k,) each
        if all(ok.all() for ok in finite):
            return
        position = int(np.argmin(np.logical_and.reduce(finite)))
        name = next(name for name, ok in zip(self.rule.arrays, finite, strict=True)
                    if not ok[position])
        row = int((rows if names is None else names)[position])
        raise InvalidRequest(
            f"the new {name} of row {row} would not be finite in {weights.dtype} "
            f"(lr={lr!r}, optimizer {self.kind}); nothing was changed"
        )

    def _arguments(
        self, weights: np.ndarray, state: dict[str, np.ndarray], rows: np.ndarray,
        grads: np.ndarray, lr: float, step: int,
    ) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray, tuple[Any, ...]]:
        """The kernel's arguments: arrays, rows (k,) int64, grads (k, dim), constants."""
        dtype = weights.dtype
        arrays = (weights, *(state[name] for name in self.state_names))
        constants = tuple(scalar(value, dtype) for value in self.constants(lr, step))
        return arrays, kernels.c_array(rows, np.int64), kernels.c_array(grads, dtype), constants

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    def state_bytes(self, shape: tuple[int, int], dtype: np.dtype) -> int:
        return len(self.state_names) * shape[0] * shape[1] * dtype.itemsize

    def _check(self) -> None:
        """Every hyper-parameter a finite number (stored as float), lr > 0."""
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise InvalidRequest(f"optimizer.{field.name} must be a number, got {value!r}")
            try:
                number = float(value)
            except OverflowError:  # an int too large for a float
                number = math.inf
            if not math.isfinite(number):
                raise InvalidRequest(f"optimizer.{field.name} must be finite, got {value!r}")
            setattr(self, field.name, number)
        if self.lr <= 0:
            raise InvalidRequest(f"optimizer.lr must be > 0, got {self.lr!r}")

    def _check_fraction(self, name: str) -> None:
        """A decay rate: 0 <= value < 1."""
        value = getattr(self, name)
        if not 0 <= value < 1:
            raise InvalidRequest(f"optimizer.{name} must be in [0, 1), got {value!r}")

    def _check_positive(self, name: str) -> None:
        value = getattr(self, name)
        if not value > 0:
            raise InvalidRequest(f"optimizer.{name} must be > 0, got {value!r}")


@dataclass
class SGD(Optimizer):
    kind: ClassVar[str] = "sgd"
    rule: ClassVar[kernels.Step] = kernels.SGD
    lr: float = 0.01

    def __post_init__(self) -> None:
        self._check()

    def constants(self, lr: float, step: int) -> tuple[float, ...]:
        return (lr,)


@dataclass
class Momentum(Optimizer):
    kind: ClassVar[str] = "momentum"
    state_names: ClassVar[tuple[str, ...]] = ("velocity",)
    rule: ClassVar[kernels.Step] = kernels.MOMENTUM
    lr: float = 0.01
    momentum: float = 0.9

    def __post_init__(self) -> None:
        self._check()
        self._check_fraction("momentum")

    def constants(self, lr: float, step: int) -> tuple[float, ...]:
        return lr, self.momentum


@dataclass
class Adagrad(Optimizer):
    kind: ClassVar[str] = "adagrad"
    state_names: ClassVar[tuple[str, ...]] = ("sum_squares",)
    rule: ClassVar[kernels.Step] = kernels.ADAGRAD
    lr: float = 0.01
    eps: float = 1e-10
    initial_accumulator_value: float = 0.0

    def __post_init__(self) -> None:
        self._check()
        self._check_positive("eps")
        if self.initial_accumulator_value < 0:
            raise InvalidRequest(
                "optimizer.initial_accumulator_value must be >= 0, "
                f"got {self.initial_accumulator_value!r}"
            )

    def init_state(self, shape: tuple[int, int], dtype: np.dtype) -> dict[str, np.ndarray]:
        return {"sum_squares": np.full(shape, self.initial_accumulator_value, dtype=dtype)}

    def constants(self, lr: float, step: int) -> tuple[float, ...]:
        return lr, self.eps


@dataclass
class Adam(Optimizer):
    """Lazy Adam, as torch.optim.SparseAdam: moments and weights move only for pushed rows;
    bias correction uses the table's step count."""

    kind: ClassVar[str] = "adam"
    state_names: ClassVar[tuple[str, ...]] = ("exp_avg", "exp_avg_sq")
    rule: ClassVar[kernels.Step] = kernels.ADAM
    lr: float = 0.001
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        self._check()
        self._check_fraction("beta1")
        self._check_fraction("beta2")
        self._check_positive("eps")

    def constants(self, lr: float, step: int) -> tuple[float, ...]:
        bias_correction1 = 1 - self.beta1**step
        bias_correction2 = 1 - self.beta2**step
        step_size = lr * math.sqrt(bias_correction2) / bias_correction1
        return step_size, 1 - self.beta1, 1 - self.beta2, self.eps


OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.kind: cls for cls in (SGD, Momentum, Adagrad, Adam)
}


def make_optimizer(config: dict[str, Any]) -> Optimizer:
    """Build an optimizer from its config, e.g. {"kind": "adam", "lr": 0.001}; InvalidRequest
    names the field and value that is wrong."""
    config = dict(config)
    kind = config.pop("kind", "sgd")
    cls = OPTIMIZERS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise InvalidRequest(
            f"optimizer.kind must be one of {sorted(OPTIMIZERS)}, got {kind!r}"
        )
    known = {field.name for field in fields(cls)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise InvalidRequest(
            f"optimizer.{unknown[0]} is not a parameter of {kind!r} (it takes {sorted(known)})"
        )
    return cls(**config)
