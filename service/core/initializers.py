"""Initial weights of a table: normal, uniform or zeros, reproducible from a seed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

InitKind = Literal["normal", "uniform", "zeros"]


@dataclass(frozen=True)
class InitSpec:
    """How to fill a new table. `std` is used by normal, `low`/`high` by uniform."""

    kind: InitKind = "normal"
    std: float = 0.01
    low: float = -0.05
    high: float = 0.05

    def as_dict(self) -> dict[str, object]:
        if self.kind == "normal":
            return {"kind": "normal", "std": self.std}
        if self.kind == "uniform":
            return {"kind": "uniform", "low": self.low, "high": self.high}
        return {"kind": "zeros"}


def initial_weights(
    shape: tuple[int, int], dtype: np.dtype, spec: InitSpec, seed: int | None
) -> np.ndarray:
    """A new (num_embeddings, embedding_dim) matrix; the same seed gives the same matrix."""
    if spec.kind == "zeros":
        return np.zeros(shape, dtype=dtype)
    rng = np.random.default_rng(seed)
    weights = np.empty(shape, dtype=dtype)
    if spec.kind == "normal":
        rng.standard_normal(out=weights, dtype=dtype)
        weights *= dtype.type(spec.std)
    else:
        rng.random(out=weights, dtype=dtype)
        weights *= dtype.type(spec.high - spec.low)
        weights += dtype.type(spec.low)
    return weights
