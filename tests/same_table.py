"""One comparison of two core tables' whole state, for the tests that check a table against an
oracle table: weights, optimizer state, step and pending gradient, all exactly."""

from __future__ import annotations

import numpy as np

from service.core.table import EmbeddingTable


def assert_same_table(ours: EmbeddingTable, reference: EmbeddingTable) -> None:
    """Exactly the same weights, optimizer state (the same arrays), step, and pending gradient
    (the same rows with the same sums, in any order, and the same count of pushes)."""
    np.testing.assert_array_equal(ours.weights, reference.weights)
    assert ours.state.keys() == reference.state.keys()
    for name in ours.state:
        np.testing.assert_array_equal(ours.state[name], reference.state[name])
    assert ours.step == reference.step
    rows, sums, pushes = ours.pending()
    reference_rows, reference_sums, reference_pushes = reference.pending()
    order, reference_order = np.argsort(rows), np.argsort(reference_rows)
    np.testing.assert_array_equal(rows[order], reference_rows[reference_order])
    np.testing.assert_array_equal(sums[order], reference_sums[reference_order])
    assert pushes == reference_pushes
