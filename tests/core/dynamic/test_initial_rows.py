"""Initial rows: a pure function of (seed, spec, key), whatever the batch, order or process,
with the distribution its spec names."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from service.core.dynamic.initial_rows import (
    initial_rows,
    portable_log,
    portable_sincos_turns,
    seed_state,
)
from service.core.initializers import InitSpec

SPECS = [InitSpec("normal", std=0.5), InitSpec("uniform", low=-0.25, high=0.75), InitSpec("zeros")]
DTYPES = [np.dtype(np.float32), np.dtype(np.float64)]
KEYS = np.array([0, 1, -1, 2**63 - 1, -(2**63), 123456789, -987654321], dtype=np.int64)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.kind)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_same_rows_in_any_order_and_any_batch_split(spec: InitSpec, dtype: np.dtype) -> None:
    rng = np.random.default_rng(0)
    keys = np.concatenate([KEYS, rng.integers(-(2**63), 2**63 - 1, 500, dtype=np.int64)])
    whole = initial_rows(keys, 33, dtype, spec, seed=11)  # odd dim: the last pair half used
    assert whole.shape == (keys.size, 33) and whole.dtype == dtype
    order = rng.permutation(keys.size)
    np.testing.assert_array_equal(initial_rows(keys[order], 33, dtype, spec, 11), whole[order])
    one_by_one = np.concatenate([initial_rows(keys[i : i + 1], 33, dtype, spec, 11)
                                 for i in range(keys.size)])
    np.testing.assert_array_equal(one_by_one, whole)
    # a wider row starts with the narrower one: column c depends on (seed, key, c) alone
    if spec.kind != "normal":
        np.testing.assert_array_equal(initial_rows(keys, 40, dtype, spec, 11)[:, :33], whole)


def test_float32_rows_are_the_float64_rows_rounded() -> None:
    for spec in SPECS:
        wide = initial_rows(KEYS, 16, np.dtype(np.float64), spec, 5)
        np.testing.assert_array_equal(
            initial_rows(KEYS, 16, np.dtype(np.float32), spec, 5), wide.astype(np.float32)
        )


def test_uint64_keys_are_the_int64_with_the_same_bits() -> None:
    spec = InitSpec()
    np.testing.assert_array_equal(
        initial_rows(KEYS.view(np.uint64), 8, np.dtype(np.float64), spec, 1),
        initial_rows(KEYS, 8, np.dtype(np.float64), spec, 1),
    )


def test_seed_and_key_change_the_row() -> None:
    spec = InitSpec()
    a = initial_rows(KEYS, 8, np.dtype(np.float64), spec, 1)
    assert not np.array_equal(a, initial_rows(KEYS, 8, np.dtype(np.float64), spec, 2))
    assert len({row.tobytes() for row in a}) == KEYS.size
    # big seeds fold to distinct states; negative seeds are refused
    assert len({int(seed_state(s)) for s in (0, 1, 2**64 - 1, 2**64, 2**200)}) == 5
    with pytest.raises(ValueError, match="seed must be >= 0, got -3"):
        seed_state(-3)


CHILD = """
import sys, numpy as np
from service.core.dynamic.initial_rows import initial_rows
from service.core.initializers import InitSpec
keys = np.array([5, -5, 2**62, 77], dtype=np.int64)
for spec in (InitSpec("normal", std=0.1), InitSpec("uniform", low=-1.0, high=2.0)):
    for dtype in (np.float32, np.float64):
        sys.stdout.write(initial_rows(keys, 64, np.dtype(dtype), spec, 99).tobytes().hex())
"""


def test_same_rows_in_another_process() -> None:
    here = "".join(
        initial_rows(np.array([5, -5, 2**62, 77]), 64, np.dtype(dtype), spec, 99).tobytes().hex()
        for spec in (InitSpec("normal", std=0.1), InitSpec("uniform", low=-1.0, high=2.0))
        for dtype in (np.float32, np.float64)
    )
    child = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                           check=True, timeout=60)
    assert child.stdout == here


def test_normal_rows_have_mean_zero_and_the_asked_std() -> None:
    """2^20 draws: the mean's standard error is std / 1024, so |mean| < 5 std / 1024 fails by
    chance about once in 1.7 million; the sample std is within 5 standard errors
    (std / sqrt(2n) each). The fraction beyond 1, 2, 3 std matches the normal's tails."""
    n_keys, dim, std = 16384, 64, 0.5
    values = initial_rows(np.arange(n_keys) * 7 - 9999, dim, np.dtype(np.float64),
                          InitSpec("normal", std=std), seed=3).ravel()
    n = values.size
    assert np.isfinite(values).all() and np.abs(values).max() < 8.6 * std
    assert abs(values.mean()) < 5 * std / math.sqrt(n)
    assert abs(values.std() - std) < 5 * std / math.sqrt(2 * n)
    for k in (1, 2, 3):
        tail = 1 - math.erf(k / math.sqrt(2))  # P(|z| > k)
        observed = np.mean(np.abs(values) > k * std)
        assert abs(observed - tail) < 5 * math.sqrt(tail * (1 - tail) / n)
    # columns of one key are independent of each other: the correlation of neighbours is ~0
    grid = values.reshape(n_keys, dim)
    assert abs(np.corrcoef(grid[:, 0], grid[:, 1])[0, 1]) < 5 / math.sqrt(n_keys)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_uniform_rows_stay_in_bounds_with_uniform_spread(dtype: np.dtype) -> None:
    low, high = -0.05, 0.05
    values = initial_rows(np.arange(8192), 64, dtype, InitSpec("uniform", low=low, high=high),
                          seed=0).ravel()
    assert values.min() >= dtype.type(low) and values.max() <= dtype.type(high)
    counts = np.histogram(values.astype(np.float64), bins=10, range=(low, high))[0]
    expected = values.size / 10  # chi-square, 9 degrees of freedom: 40 is p ~ 1e-5
    assert ((counts - expected) ** 2 / expected).sum() < 40


def test_zeros_are_zeros() -> None:
    rows = initial_rows(KEYS, 4, np.dtype(np.float32), InitSpec("zeros"), 0)
    np.testing.assert_array_equal(rows, np.zeros((KEYS.size, 4), np.float32))


def test_portable_log_sin_cos_match_libm_to_a_few_ulp() -> None:
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.random(100_000), [2.0**-53, 0.5, 1.0, 0.7071067811865476]])
    x = x[x > 0]
    np.testing.assert_allclose(portable_log(x), np.log(x), rtol=1e-15, atol=0)  # 4.5 ulp
    sin_u, cos_u = portable_sincos_turns(x)
    np.testing.assert_allclose(sin_u, np.sin(2 * np.pi * x), rtol=0, atol=2e-15)
    np.testing.assert_allclose(cos_u, np.cos(2 * np.pi * x), rtol=0, atol=2e-15)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.kind)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_both_backends_give_the_same_bytes(spec: InitSpec, dtype: np.dtype) -> None:
    rng = np.random.default_rng(2)
    keys = np.concatenate([KEYS, rng.integers(-(2**63), 2**63 - 1, 20_000, dtype=np.int64)])
    for dim in (1, 33, 64):
        np.testing.assert_array_equal(
            initial_rows(keys, dim, dtype, spec, 17, backend="numba"),
            initial_rows(keys, dim, dtype, spec, 17, backend="numpy"),
        )
