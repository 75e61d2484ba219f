"""The compiled kernels against their numpy twins (the same bytes, on thousands of random cases)
and against independent oracles (np.add.at, np.unique, np.searchsorted, Python loops); and the
promise that nothing compiles once a backend is chosen."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from service.core import kernels
from service.core.kernels import ADAGRAD, ADAM, MOMENTUM, SGD, Step

CASES = 2000  # random cases per kernel and dtype
DTYPES = [np.float32, np.float64]
DIMS = [1, 2, 3, 7, 8, 16, 17, 31, 64]  # below, at and past the SIMD widths, with remainders


def random_dim(rng: np.random.Generator) -> int:
    return int(rng.choice(DIMS))


def both(kernel: kernels.Kernel) -> tuple[Callable[..., Any], Callable[..., Any]]:
    return kernel.implementation("numba"), kernel.implementation("numpy")


def assert_same_bytes(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    # bytes, not values: 0.0 and -0.0, or two NaN payloads, would pass an == comparison
    np.testing.assert_array_equal(actual.view(np.uint8), expected.view(np.uint8))


def awkward(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Values whose sums depend on the order of additions: magnitudes 1e-30..1e30 (float32 wide
    range), signed zeros, subnormals."""
    values = rng.standard_normal(shape) * 10.0 ** rng.integers(-30, 30, shape)
    special = rng.random(shape) < 0.05
    values[special] = rng.choice([0.0, -0.0, 1e-40, -1e-310, 3.0], size=int(special.sum()))
    return values.astype(dtype)


def random_ids(rng: np.random.Generator, count: int) -> np.ndarray:
    """Any int64: small pools (duplicates), negatives, the extremes."""
    if rng.random() < 0.5:
        pool = rng.integers(-20, 20, size=int(rng.integers(1, 12)))
    else:
        pool = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=8,
                            endpoint=True)
        pool[:2] = [np.iinfo(np.int64).min, np.iinfo(np.int64).max]
    return rng.choice(pool, size=count)


# -- scatter ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_scatter_add_is_np_add_at_on_both_backends(dtype: type) -> None:
    compiled, numpy = both(kernels.scatter_add)
    rng = np.random.default_rng(1)
    for _ in range(CASES):
        rows, count, dim = int(rng.integers(1, 12)), int(rng.integers(0, 60)), random_dim(rng)
        distinct = rng.random() < 0.2 and count <= rows
        slots = (rng.permutation(rows)[:count] if distinct else rng.integers(0, rows, count))
        slots = slots.astype(np.int64)
        start = awkward(rng, (rows, dim), dtype)
        grads = awkward(rng, (count, dim), dtype)
        expected = start.copy()
        with np.errstate(all="ignore"):
            np.add.at(expected, slots, grads)  # the oracle
            for implementation in (compiled, numpy):
                target = start.copy()
                implementation(target, slots, grads, bool(distinct))
                assert_same_bytes(target, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_first_non_finite_row_on_both_backends(dtype: type) -> None:
    compiled, numpy = both(kernels.first_non_finite_row)
    rng = np.random.default_rng(2)
    for _ in range(CASES):
        values = rng.standard_normal((int(rng.integers(0, 30)), random_dim(rng)))
        values = values.astype(dtype)
        for _ in range(int(rng.integers(0, 3))):
            if values.size:
                values.flat[rng.integers(0, values.size)] = rng.choice([np.inf, -np.inf, np.nan])
        bad_rows = [i for i, row in enumerate(values.tolist())
                    if any(v != v or v in (np.inf, -np.inf) for v in row)]  # Python loop oracle
        expected = bad_rows[0] if bad_rows else -1
        assert compiled(values) == numpy(values) == expected


# -- distinct ids and sorted search ----------------------------------------------------------------
def test_sorted_distinct_is_np_unique_with_inverse_for_any_int64() -> None:
    compiled, numpy = both(kernels.sorted_distinct)
    rng = np.random.default_rng(3)
    for case in range(CASES):
        ids = random_ids(rng, int(rng.integers(0, 80)))
        if case % 10 == 0:  # a larger push: more bits of position
            ids = random_ids(rng, int(rng.integers(2000, 5000)))
        expected_rows, expected_inverse = np.unique(ids, return_inverse=True)
        for implementation in (compiled, numpy):
            rows, slot_of_id = implementation(ids)
            assert rows.dtype == slot_of_id.dtype == np.int64
            np.testing.assert_array_equal(rows, expected_rows)
            np.testing.assert_array_equal(slot_of_id, expected_inverse.reshape(-1))


def test_search_sorted_is_np_searchsorted_for_sorted_needles() -> None:
    compiled, numpy = both(kernels.search_sorted)
    rng = np.random.default_rng(4)
    for _ in range(CASES):
        keys = np.unique(random_ids(rng, int(rng.integers(0, 40))))
        needles = np.sort(np.concatenate([random_ids(rng, int(rng.integers(0, 60))),
                                          rng.choice(keys, 5) if len(keys) else keys]))
        expected = np.searchsorted(keys, needles)
        np.testing.assert_array_equal(compiled(keys, needles), expected)
        np.testing.assert_array_equal(numpy(keys, needles), expected)


# -- optimizer steps -------------------------------------------------------------------------------
STEPS = {"sgd": SGD, "momentum": MOMENTUM, "adagrad": ADAGRAD, "adam": ADAM}


def step_case(rng: np.random.Generator, step: Step, dtype: type, overflow: bool
              ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, list[Any]]:
    """Arrays (weights and state, (n, dim)), distinct rows in any order, their grads, and the
    rule's constants as dtype scalars; with overflow, grads and lr large enough for inf."""
    n, dim = int(rng.integers(1, 40)), random_dim(rng)
    weights = rng.standard_normal((n, dim)).astype(dtype)
    states = [np.abs(rng.standard_normal((n, dim))).astype(dtype) for _ in step.arrays[1:]]
    rows = rng.permutation(n)[: int(rng.integers(0, n + 1))].astype(np.int64)
    grads = rng.standard_normal((len(rows), dim)).astype(dtype)
    scale = 1.0
    if overflow:  # huge grads (g * g is inf) and lr (lr * g may be inf)
        grads = awkward(rng, (len(rows), dim), dtype)
        huge = rng.random(grads.shape) < 0.1
        grads[huge] = np.finfo(dtype).max / 2 * rng.choice([-1, 1], int(huge.sum()))
        scale = float(np.finfo(dtype).max) / 1e8
    constants = {  # lr (or adam's step size), then the rule's others
        1: [rng.uniform(1e-4, 1.0) * scale],
        2: [rng.uniform(1e-4, 1.0) * scale, rng.uniform(1e-12, 0.99)],
        4: [rng.uniform(1e-4, 1.0) * scale, rng.uniform(0.01, 1.0), rng.uniform(0.001, 1.0),
            rng.uniform(1e-12, 1e-3)],
    }[len(step.constants)]
    return [weights, *states], rows, grads, [dtype(value) for value in constants]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", STEPS)
def test_optimizer_steps_are_bit_identical_on_both_backends(kind: str, dtype: type) -> None:
    """Both write the same bytes, or both refuse (a new value not finite) and write nothing."""
    step = STEPS[kind]
    compiled, numpy = both(step.kernel)
    rng = np.random.default_rng(5)
    refused = 0
    for case in range(CASES):
        arrays, rows, grads, constants = step_case(rng, step, dtype, overflow=case % 4 == 0)
        before = [array.copy() for array in arrays]
        with np.errstate(all="ignore"):
            expected = step.new_rows(*arrays, rows, grads, *constants)
        finite = all(np.isfinite(values).all() for values in expected)
        results = []
        for implementation in (compiled, numpy):
            mine = [array.copy() for array in before]
            results.append(implementation(*mine, rows, grads, *constants))
            for array, original, new in zip(mine, before, expected, strict=True):
                changed = original.copy()
                if finite:
                    changed[rows] = new
                assert_same_bytes(array, changed)
        assert results == [finite, finite]
        refused += not finite
    assert CASES // 8 < refused < CASES // 2  # both outcomes were exercised


@pytest.mark.parametrize("kind", STEPS)
def test_new_rows_follow_a_python_loop_of_the_rule(kind: str) -> None:
    """The numpy rule (which the compiled loop equals bit for bit, above) against the textbook
    formulas, element by element in Python floats (float64)."""
    step = STEPS[kind]
    rng = np.random.default_rng(6)
    arrays, rows, grads, constants = step_case(rng, step, np.float64, overflow=False)
    new = dict(zip(step.arrays, step.new_rows(*arrays, rows, grads, *constants), strict=True))
    c = [float(value) for value in constants]
    for i, row in enumerate(rows.tolist()):
        for column in range(grads.shape[1]):
            g, w = float(grads[i, column]), float(arrays[0][row, column])
            state = [float(array[row, column]) for array in arrays[1:]]
            if kind == "sgd":
                expected = {"weights": w - c[0] * g}
            elif kind == "momentum":
                v = c[1] * state[0] - c[0] * g
                expected = {"velocity": v, "weights": w + v}
            elif kind == "adagrad":
                h = state[0] + g * g
                expected = {"sum_squares": h, "weights": w - c[0] * g / (h**0.5 + c[1])}
            else:
                m = state[0] + (g - state[0]) * c[1]  # c[1] = 1 - beta1
                s = state[1] + (g * g - state[1]) * c[2]
                expected = {"exp_avg": m, "exp_avg_sq": s,
                            "weights": w - c[0] * m / (s**0.5 + c[3])}
            for name, value in expected.items():
                assert new[name][i, column] == pytest.approx(value, rel=1e-12, abs=1e-300)


# -- compile once, never while serving -------------------------------------------------------------
def test_numba_compiles_every_listed_signature_and_nothing_else() -> None:
    """use("numba") leaves each kernel compiled for exactly its listed signatures; an argument
    of another type is a TypeError, never a compilation during a request."""
    kernels.use("numba")
    from numba import types

    for kernel in kernels.kernels():
        compiled, wanted = kernel.compiled, kernel.signatures(types)
        if not isinstance(compiled, tuple):
            compiled, wanted = (compiled,), (wanted,)
        for dispatcher, signatures in zip(compiled, wanted, strict=True):
            assert len(dispatcher.signatures) == len(signatures), kernel.name
    with pytest.raises(TypeError, match="No matching definition"):
        kernels.scatter_add.compiled(np.zeros((2, 2), np.float16), np.zeros(1, np.int64),
                                     np.zeros((1, 2), np.float16), False)


def test_use_refuses_an_unknown_backend_naming_it() -> None:
    with pytest.raises(ValueError, match="kernels must be one of \\['numba', 'numpy'\\], got 'c'"):
        kernels.use("c")
