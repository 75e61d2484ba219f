"""sum_duplicate_rows against np.add.at on a dense buffer: the same bits, not just close."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from service.core.scatter import sum_duplicate_rows

pytestmark = pytest.mark.usefixtures("kernel_backend")  # every test on numba and on numpy

NUM_ROWS = 50


def dense_reference(ids: np.ndarray, grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference layer's backward: np.add.at into a zeroed (num_rows, dim) buffer."""
    dense = np.zeros((NUM_ROWS, grads.shape[1]), dtype=grads.dtype)
    np.add.at(dense, ids, grads)
    rows = np.unique(ids)
    return rows, dense[rows]


def assert_bit_identical(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    # compare the bytes: 0.0 and -0.0, or two NaN payloads, would pass an == comparison
    np.testing.assert_array_equal(actual.view(np.uint8), expected.view(np.uint8))


@st.composite
def pushes(draw: st.DrawFn, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """ids drawn from a few rows (duplicates are the rule) and grads with awkward values:
    wide magnitudes whose sums depend on the order of additions, signed zeros, subnormals."""
    count = draw(st.integers(0, 60))
    pool = draw(st.lists(st.integers(0, NUM_ROWS - 1), min_size=1, max_size=12))
    ids = np.array(draw(st.lists(st.sampled_from(pool), min_size=count, max_size=count)),
                   dtype=np.int64)
    dim = draw(st.integers(1, 6))
    bound = 2.0**119 if dtype == np.float32 else 2.0**1015  # 60 of them sum to a finite number
    elements = st.floats(-bound, bound, width=np.dtype(dtype).itemsize * 8)
    grads = draw(hnp.arrays(dtype, (count, dim), elements=elements | st.sampled_from(
        [0.0, -0.0, 1e-30, 1e30, -1e30, 3.0, -3.0])))
    return ids, grads


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sums_are_bit_identical_to_np_add_at_on_a_dense_buffer(dtype: type) -> None:
    @settings(max_examples=300, deadline=None)
    @given(pushes(dtype))
    def check(push: tuple[np.ndarray, np.ndarray]) -> None:
        ids, grads = push
        rows, sums = sum_duplicate_rows(ids, grads)
        expected_rows, expected_sums = dense_reference(ids, grads)
        np.testing.assert_array_equal(rows, expected_rows)
        assert_bit_identical(sums, expected_sums)

    check()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_push_with_heavy_duplicates_is_bit_identical(dtype: type) -> None:
    """The benchmark's shape: 4096 x 64 with Zipf ids (one row takes hundreds of additions)."""
    rng = np.random.default_rng(0)
    ids = (rng.zipf(1.2, 4096) - 1) % NUM_ROWS
    grads = (rng.standard_normal((4096, 64)) * 10.0 ** rng.integers(-6, 6, (4096, 1))).astype(dtype)
    rows, sums = sum_duplicate_rows(ids, grads)
    expected_rows, expected_sums = dense_reference(ids, grads)
    np.testing.assert_array_equal(rows, expected_rows)
    assert_bit_identical(sums, expected_sums)


def test_distinct_ids_are_sorted_with_their_rows_and_signed_zeros_become_plus_zero() -> None:
    ids = np.array([7, 2, 9])
    grads = np.array([[1.0, -0.0], [2.0, 5.0], [-0.0, 3.0]])
    rows, sums = sum_duplicate_rows(ids, grads)
    assert rows.tolist() == [2, 7, 9]
    assert_bit_identical(sums, np.array([[2.0, 5.0], [1.0, 0.0], [0.0, 3.0]]))


def test_duplicates_are_added_in_push_order_from_zero() -> None:
    """float32: (1e8 + 1) - 1e8 is 0 in that order, 1 in another; np.add.at's order gives 0."""
    ids = np.array([4, 4, 4, 1])
    grads = np.array([[1e8], [1.0], [-1e8], [-0.0]], dtype=np.float32)
    rows, sums = sum_duplicate_rows(ids, grads)
    assert rows.tolist() == [1, 4]
    assert_bit_identical(sums, np.array([[0.0], [0.0]], dtype=np.float32))


def test_empty_push_gives_no_rows() -> None:
    rows, sums = sum_duplicate_rows(np.empty(0, np.int64), np.empty((0, 3), np.float32))
    assert rows.shape == (0,) and sums.shape == (0, 3) and sums.dtype == np.float32
