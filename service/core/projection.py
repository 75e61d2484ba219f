"""A 2-D picture of a table: PCA of a sample of its rows, for the /ui scatter plot.

The sample is the first `sample` live rows in the view's order (for a dense table the rows with
the smallest ids: for a vocabulary sorted by frequency, the most frequent words), or, with a
seed, `sample` rows drawn uniformly at random without replacement (each row gets a random key
from the seed and the smallest keys are kept, so memory stays one block plus the sample).

Projection: the sample is centred and its two leading principal axes found by SVD (float64);
each axis is signed so that its largest coordinate is positive, which makes the picture
deterministic (SVD alone may flip an axis from one run or machine to the next).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.core.errors import InvalidRequest
from service.core.rows import RowView

MAX_SAMPLE = 20_000
BLOCK_ROWS = 16_384


@dataclass(frozen=True)
class Projection:
    ids: np.ndarray  # (n,) int64
    points: np.ndarray  # (n, 2) float64
    explained: np.ndarray  # (2,) share of the sample's variance along each axis
    live_rows: int


def sample_rows(view: RowView, sample: int, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(n,) ids and (n, dim) float64 rows of the sample (see the module docstring)."""
    buffer = np.empty((BLOCK_ROWS, view.embedding_dim), dtype=view.dtype)
    kept_ids: list[np.ndarray] = []
    kept_rows: list[np.ndarray] = []
    if seed is None:
        taken = 0
        for ids, rows in view.blocks(BLOCK_ROWS, buffer):
            need = sample - taken
            kept_ids.append(ids[:need].copy())
            kept_rows.append(rows[:need].astype(np.float64))
            taken += len(kept_ids[-1])
            if taken >= sample:
                break
        return _joined(kept_ids, kept_rows, view.embedding_dim)
    rng = np.random.default_rng(seed)
    best_keys = np.empty(0)
    for ids, rows in view.blocks(BLOCK_ROWS, buffer):
        keys = np.concatenate([best_keys, rng.random(len(ids))])  # (m,)
        all_ids = np.concatenate([*kept_ids, ids])
        all_rows = np.concatenate([*kept_rows, rows.astype(np.float64)])
        keep = np.argsort(keys, kind="stable")[:sample]
        best_keys, kept_ids, kept_rows = keys[keep], [all_ids[keep]], [all_rows[keep]]
    ids, rows = _joined(kept_ids, kept_rows, view.embedding_dim)
    order = np.argsort(ids, kind="stable")
    return ids[order], rows[order]


def _joined(ids: list[np.ndarray], rows: list[np.ndarray], dim: int) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    if not ids:
        return np.empty(0, np.int64), np.empty((0, dim))
    return np.concatenate(ids).astype(np.int64), np.concatenate(rows)


def project(view: RowView, sample: int = 1000, seed: int | None = None) -> Projection:
    if type(sample) is not int or not 1 <= sample <= MAX_SAMPLE:
        raise InvalidRequest(f"sample must be an integer in [1, {MAX_SAMPLE}], got {sample!r}")
    live = view.live_rows()
    ids, rows = sample_rows(view, sample, seed)  # (n,), (n, dim)
    points, explained = pca_2d(rows)
    return Projection(ids, points, explained, live)


def pca_2d(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2) coordinates along the two leading principal axes, and each axis's share of the
    variance. Fewer than two axes (one row, or one column) leave zeros."""
    count, dim = rows.shape
    points = np.zeros((count, 2))
    explained = np.zeros(2)
    if count < 2:
        return points, explained
    centred = rows - rows.mean(axis=0)  # (n, dim)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)  # axes (r, dim)
    axes = axes[:2]  # (<= 2, dim)
    flip = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])  # (<= 2,)
    axes = axes * flip[:, None]
    points[:, : len(axes)] = centred @ axes.T  # (n, <= 2)
    total = float((singular**2).sum())
    if total > 0:
        explained[: len(axes)] = singular[:2] ** 2 / total
    return points, explained


__all__ = ["MAX_SAMPLE", "Projection", "pca_2d", "project", "sample_rows"]
