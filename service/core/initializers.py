"""Initial weights of a table: normal, uniform or zeros, reproducible from a seed.

`check_init` refuses, before anything is allocated, parameters that cannot give finite weights in
the table's dtype. For uniform that is exact: the draws are low + u * (high - low) with u in
[0, 1), computed in the table's dtype, so low, high and high - low must be finite there. A normal
draw has no bound in theory, so "cannot" needs a rule: numpy's sampler is a ziggurat whose tail
is drawn from uniforms of 53 bits (float64) or 24 bits (float32), and the largest |z| it can
return is below 3.6542 + sqrt(2 * 53 ln 2) = 12.23 (float64) and 3.6542 + sqrt(2 * 24 ln 2) =
9.42 (float32). A std with std * NORMAL_DRAW_BOUND (16) finite therefore gives finite weights for
every seed; a larger one may overflow, and is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from service.core.errors import InvalidRequest

InitKind = Literal["normal", "uniform", "zeros"]
NORMAL_DRAW_BOUND = 16.0  # above the largest |z| numpy's normal sampler returns (see above)


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


def check_init(spec: InitSpec, dtype: np.dtype) -> None:
    """InvalidRequest unless every weight initial_weights can draw for `spec` is finite in
    `dtype` (the rule is in the module docstring)."""
    largest = float(np.finfo(dtype).max)
    if spec.kind == "normal" and not spec.std * NORMAL_DRAW_BOUND <= largest:
        raise InvalidRequest(
            f"init.std must be at most {largest / NORMAL_DRAW_BOUND:.4g} for a {dtype.name} table "
            "(std x 16 must stay finite: numpy's normal sampler draws |z| < 9.5 in float32 and "
            f"< 12.3 in float64), got {spec.std!r}"
        )
    if spec.kind == "uniform":
        for name, value in (("low", spec.low), ("high", spec.high)):
            if not abs(value) <= largest:
                raise InvalidRequest(f"init.{name} must be finite in {dtype.name} "
                                     f"(|{name}| <= {largest:.4g}), got {value!r}")
        if not spec.high - spec.low <= largest:
            raise InvalidRequest(
                f"init.high - init.low must be at most {largest:.4g} for a {dtype.name} table "
                f"(the draws are low + u x (high - low)), got low={spec.low!r}, "
                f"high={spec.high!r}"
            )


def initial_weights(
    shape: tuple[int, int], dtype: np.dtype, spec: InitSpec, seed: int | None
) -> np.ndarray:
    """A new (num_embeddings, embedding_dim) matrix; the same seed gives the same matrix."""
    if spec.kind == "zeros":
        return np.zeros(shape, dtype=dtype)
    weights = np.empty(shape, dtype=dtype)
    _fill(np.random.default_rng(seed), weights, spec)
    return weights


def _fill(rng: np.random.Generator, out: np.ndarray, spec: InitSpec) -> None:
    """Draw the next out.size values of the table's stream into `out` (in place)."""
    dtype = out.dtype
    if spec.kind == "normal":
        rng.standard_normal(out=out, dtype=dtype)
        out *= dtype.type(spec.std)
    else:
        rng.random(out=out, dtype=dtype)
        out *= dtype.type(spec.high - spec.low)
        out += dtype.type(spec.low)


def initial_weight_blocks(
    shape: tuple[int, int], dtype: np.dtype, spec: InitSpec, seed: int | None,
    block_rows: int = 1 << 16,
) -> Iterator[tuple[int, np.ndarray]]:
    """initial_weights(shape, dtype, spec, seed), block by block: (first row, (b, dim) rows),
    the same values, drawn from the same sequential stream in order (numpy's generators
    continue a stream across calls exactly as within one; tests/core/test_initializers.py
    checks it). A shard of a cluster-mode table keeps the rows it holds from each block, so
    every shard generates the whole stream once: O(num_embeddings x dim) work per shard, and
    memory for one block. Each block is a new array the caller may keep."""
    rows, dim = shape
    rng = None if spec.kind == "zeros" else np.random.default_rng(seed)
    for start in range(0, rows, block_rows):
        block = np.zeros((min(block_rows, rows - start), dim), dtype=dtype)  # (b, dim)
        if rng is not None:
            _fill(rng, block, spec)
        yield start, block
