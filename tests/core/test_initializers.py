"""Initial weights are finite in the table's dtype, or the table is refused (422) before anything
is allocated: normal std and uniform bounds are checked per dtype (service.core.initializers)."""

from __future__ import annotations

import numpy as np
import pytest

from service.core import InitSpec, TableRegistry
from service.core.errors import InvalidRequest
from service.core.initializers import (
    NORMAL_DRAW_BOUND,
    check_init,
    initial_weight_blocks,
    initial_weights,
)

FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT64_MAX = float(np.finfo(np.float64).max)


def registry() -> TableRegistry:
    return TableRegistry(memory_budget_bytes=2**30, max_tables=10)


@pytest.mark.parametrize(("dtype", "spec", "detail"), [
    ("float32", InitSpec("normal", std=1e39),
     "init.std must be at most 2.127e+37 for a float32 table (std x 16 must stay finite: numpy's "
     "normal sampler draws |z| < 9.5 in float32 and < 12.3 in float64), got 1e+39"),
    ("float32", InitSpec("normal", std=1e38), "init.std must be at most 2.127e+37"),
    ("float64", InitSpec("normal", std=2e307), "init.std must be at most 1.124e+307 for a float64"),
    ("float64", InitSpec("uniform", low=-1e308, high=1e308),
     "init.high - init.low must be at most 1.798e+308 for a float64 table (the draws are "
     "low + u x (high - low)), got low=-1e+308, high=1e+308"),
    ("float32", InitSpec("uniform", low=-3e38, high=3e38),
     "init.high - init.low must be at most 3.403e+38 for a float32 table"),
    ("float32", InitSpec("uniform", low=-1e39, high=0.0),
     "init.low must be finite in float32 (|low| <= 3.403e+38), got -1e+39"),
    ("float32", InitSpec("uniform", low=0.0, high=1e39),
     "init.high must be finite in float32 (|high| <= 3.403e+38), got 1e+39"),
])
def test_parameters_that_cannot_give_finite_weights_are_refused(
    dtype: str, spec: InitSpec, detail: str
) -> None:
    tables = registry()
    with pytest.raises(InvalidRequest) as refused:
        tables.create("t", 4, 3, dtype=dtype, init=spec)
    assert refused.value.detail.startswith(detail)
    assert len(tables) == 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_largest_accepted_parameters_give_finite_weights(dtype: str) -> None:
    largest = float(np.finfo(dtype).max)
    for spec in (InitSpec("normal", std=largest / NORMAL_DRAW_BOUND),
                 InitSpec("uniform", low=-largest / 2, high=largest / 2),
                 InitSpec("uniform", low=-largest, high=0.0),
                 InitSpec("uniform", low=0.0, high=largest)):
        check_init(spec, np.dtype(dtype))  # accepted
        weights = initial_weights((2000, 50), np.dtype(dtype), spec, seed=7)
        assert np.isfinite(weights).all(), spec


def test_the_bound_covers_numpys_sampler() -> None:
    """NORMAL_DRAW_BOUND (16) is above the largest |z| numpy's ziggurat can return: below
    3.6542 + sqrt(2 * 53 ln 2) = 12.23 in float64 (53-bit uniforms), 3.6542 + sqrt(2 * 24 ln 2)
    = 9.42 in float32 (24-bit uniforms). A million draws of each stay well inside it."""
    assert 3.6542 + np.sqrt(2 * 53 * np.log(2)) < 12.3 < NORMAL_DRAW_BOUND
    assert 3.6542 + np.sqrt(2 * 24 * np.log(2)) < 9.5 < NORMAL_DRAW_BOUND
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        assert np.abs(rng.standard_normal(10**6, dtype=dtype)).max() < 12.3


def test_ordinary_parameters_are_untouched() -> None:
    tables = registry()
    table = tables.create("t", 5, 3, init=InitSpec("normal", std=0.5), seed=3)
    expected = np.random.default_rng(3).standard_normal((5, 3), dtype=np.float32)
    expected *= np.float32(0.5)
    np.testing.assert_array_equal(table.weights, expected)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("spec", [InitSpec("normal", std=0.3), InitSpec("uniform", -2.0, 0.5),
                                  InitSpec("uniform", low=-0.1, high=0.7), InitSpec("zeros")])
@pytest.mark.parametrize("block_rows", [1, 3, 64, 1000])
def test_blocks_are_the_whole_matrix_in_pieces(dtype: str, spec: InitSpec,
                                               block_rows: int) -> None:
    """A shard draws the table's stream block by block and keeps its rows: the blocks, put
    together, must be the matrix drawn in one piece, bit for bit (odd block sizes included:
    a float32 stream keeps half of a 64-bit draw between calls)."""
    shape = (101, 7)  # 7 columns: an odd number of draws per row
    whole = initial_weights(shape, np.dtype(dtype), spec, seed=11)
    blocks = list(initial_weight_blocks(shape, np.dtype(dtype), spec, 11, block_rows))
    assert [start for start, _ in blocks] == list(range(0, 101, block_rows))
    np.testing.assert_array_equal(np.concatenate([block for _, block in blocks]), whole)
