"""Exact nearest neighbours over a table's rows, with gensim's `most_similar` query rules.

A query is positive and negative items, each an id, a label or a vector:

- cosine: every id or label item stands for its row scaled to unit length (a zero row stays
  zero), a vector item is taken as given (gensim does the same); the query is the sum of the
  positives minus the negatives, scaled to unit length. Scores are cosine similarities, best =
  highest. A row of zeros has no direction: its cosine with any query is 0 (gensim would give
  NaN). A query that sums to zero has no direction either and is refused.
- dot: the query is the plain sum of positive rows minus negative rows; scores are dot products,
  best = highest.
- l2: the same query point; scores are Euclidean distances, best = lowest.

Rows given by id or label are left out of that query's results (gensim's rule; vectors exclude
nothing). Results are sorted best first, equal scores by smaller id, and hold min(k, rows left)
entries.

Exact: every live row is scored (brute force), in the table's dtype, as `rows @ query` computes
it; the search is deterministic for a given table state. The scan reads the table through its
RowView (service.core.rows), one block of rows at a time, so the memory a search needs is one
block, the block's scores and the k best so far, whatever the table's size; up to
QUERY_GROUP queries share each pass over the rows (one matrix product per block).

    found = most_similar(DenseRows(table), table.labels, [Query(positive=["king", "woman"],
                                                                 negative=["man"])], k=10)
    found[0].ids, found[0].scores
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from service.core.errors import InvalidRequest
from service.core.labels import LabelStore
from service.core.rows import RowView

Metric = Literal["cosine", "dot", "l2"]
METRICS: tuple[str, ...] = ("cosine", "dot", "l2")
BLOCK_BYTES = 8 * 2**20  # rows read per block (one copy, reused)
SCORE_BYTES = 8 * 2**20  # scores of one block for a group of queries
MIN_BLOCK_ROWS = 1024
QUERY_GROUP = 256  # queries scored together against each block


@dataclass(frozen=True)
class Query:
    """Items are ids (int), labels (str) or vectors (a sequence or array of embedding_dim
    numbers)."""

    positive: Sequence[Any]
    negative: Sequence[Any] = ()


@dataclass(frozen=True)
class Neighbours:
    ids: np.ndarray  # (n,) int64, best first
    scores: np.ndarray  # (n,) float64
    labels: list[str | None] | None = field(default=None)


def most_similar(
    view: RowView,
    labels: LabelStore | None,
    queries: Sequence[Query],
    k: int,
    metric: str = "cosine",
) -> list[Neighbours]:
    """The k nearest rows to each query (see the module docstring for the rules)."""
    if metric not in METRICS:
        raise InvalidRequest(f"metric must be one of {list(METRICS)}, got {metric!r}")
    if type(k) is not int or k < 1:
        raise InvalidRequest(f"k must be an integer >= 1, got {k!r}")
    vectors, excluded = resolve_queries(view, labels, queries, metric)  # (q, dim)
    results: list[Neighbours] = []
    for start in range(0, len(queries), QUERY_GROUP):
        group = vectors[start : start + QUERY_GROUP]
        group_excluded = excluded[start : start + QUERY_GROUP]
        keep = k + max((len(ids) for ids in group_excluded), default=0)
        best_ids, best_scores = scan(view, group, keep, metric)
        for row in range(len(group)):
            ids, scores = best_ids[row], best_scores[row]
            if len(group_excluded[row]):
                kept = ~np.isin(ids, group_excluded[row])
                ids, scores = ids[kept], scores[kept]
            ids, scores = ids[:k], scores[:k]
            if metric == "l2":
                scores = np.sqrt(np.maximum(-scores, 0.0))  # selection ran on -distance**2
            found_labels = labels.labels_of(ids) if labels is not None and len(labels) else None
            results.append(Neighbours(ids.astype(np.int64), scores.astype(np.float64),
                                      found_labels))
    return results


# -- queries ---------------------------------------------------------------------------------------
def resolve_queries(
    view: RowView, labels: LabelStore | None, queries: Sequence[Query], metric: str
) -> tuple[np.ndarray, list[np.ndarray]]:
    """(q, dim) query vectors in the table's dtype, and the ids each query excludes."""
    dim = view.embedding_dim
    vectors = np.zeros((len(queries), dim), dtype=np.float64)  # (q, dim)
    excluded: list[np.ndarray] = []
    for number, query in enumerate(queries):
        where = f"queries[{number}]." if len(queries) > 1 else ""
        if not query.positive and not query.negative:
            raise InvalidRequest(f"{where}positive and negative are both empty: a query needs "
                                 "at least one item")
        own_ids: list[np.ndarray] = []
        for sign, items, name in ((1.0, query.positive, "positive"),
                                  (-1.0, query.negative, "negative")):
            ids, vectors_given = _split_items(items, f"{where}{name}", labels, dim)
            if len(ids):
                rows = view.rows_of(ids).astype(np.float64)  # (n, dim)
                if metric == "cosine":
                    rows = _unit_rows(rows)
                vectors[number] += sign * rows.sum(axis=0)
                own_ids.append(ids)
            for vector in vectors_given:
                vectors[number] += sign * vector
        if metric == "cosine":
            norm = float(np.linalg.norm(vectors[number]))
            if norm == 0.0 or not np.isfinite(norm):
                raise InvalidRequest(
                    f"{where}positive minus negative is the zero vector: it has no direction "
                    "to compare by cosine (use metric dot or l2, or other items)")
            vectors[number] /= norm
        excluded.append(np.unique(np.concatenate(own_ids)) if own_ids else np.empty(0, np.int64))
    if not np.isfinite(vectors).all():
        raise InvalidRequest("the query vectors overflow: their items are too large")
    return vectors.astype(view.dtype), excluded


def _split_items(
    items: Sequence[Any], field: str, labels: LabelStore | None, dim: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The ids (from id and label items) and the vectors among `items`."""
    ids: list[int] = []
    vectors: list[np.ndarray] = []
    for position, item in enumerate(items):
        where = f"{field}[{position}]"
        if isinstance(item, bool):
            raise InvalidRequest(f"{where} must be an id, a label or a vector, got {item!r}")
        if isinstance(item, int | np.integer):
            if not -(2**63) <= int(item) < 2**63:
                raise InvalidRequest(f"{where} must fit in 64 bits, got {item}")
            ids.append(int(item))
        elif isinstance(item, str):
            if labels is None or not len(labels):
                raise InvalidRequest(f"{where}: label {item!r} names no row (the table has no "
                                     "labels: PUT /v1/tables/{name}/labels)")
            ids.append(int(labels.ids_of([item], where)[0]))
        elif isinstance(item, list | tuple | np.ndarray):
            vectors.append(_vector(item, where, dim))
        else:
            raise InvalidRequest(f"{where} must be an id, a label or a vector, got {item!r}")
    return np.array(ids, dtype=np.int64), vectors


def _vector(item: Any, where: str, dim: int) -> np.ndarray:
    if any(isinstance(value, bool) for value in item):
        raise InvalidRequest(f"{where} must be a vector of numbers, got a boolean in it")
    try:
        vector = np.asarray(item, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{where} must be a vector of numbers, got {item!r}"[:200]) from None
    if vector.shape != (dim,):
        raise InvalidRequest(
            f"{where} must be a vector of embedding_dim={dim} numbers, got shape "
            f"{list(vector.shape)}")
    if not np.isfinite(vector).all():
        raise InvalidRequest(f"{where} must be finite, got NaN or infinity")
    return vector


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    """rows / their norms; zero rows stay zero."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)  # (n, 1)
    unit: np.ndarray = np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)  # (n, dim)
    return unit


# -- the scan --------------------------------------------------------------------------------------
def scan(
    view: RowView, queries: np.ndarray, keep: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """(q, keep) ids and scores of the best rows for each query, best first, ties by smaller
    id; score = cosine, dot, or -(squared distance) for l2 (higher is better for all three).
    Fewer than `keep` columns when the view has fewer rows."""
    count, dim = len(queries), view.embedding_dim
    itemsize = np.dtype(view.dtype).itemsize
    block_rows = max(MIN_BLOCK_ROWS, min(BLOCK_BYTES // (dim * itemsize),
                                         SCORE_BYTES // (max(count, 1) * 8)))
    buffer = np.empty((block_rows, dim), dtype=view.dtype)  # (block, dim), reused
    best_ids = np.empty((count, 0), dtype=np.int64)  # (q, <= keep)
    best_scores = np.empty((count, 0))  # (q, <= keep)
    query_norms = np.einsum("qd,qd->q", queries, queries).astype(np.float64)  # (q,)
    for ids, rows in view.blocks(block_rows, buffer):
        scores = (rows @ queries.T).T.astype(np.float64)  # (q, b)
        if metric == "cosine":
            norms = np.sqrt(np.einsum("bd,bd->b", rows, rows)).astype(np.float64)  # (b,)
            np.divide(scores, norms, out=scores, where=norms > 0)
            scores[:, norms == 0] = 0.0
        elif metric == "l2":
            squares = np.einsum("bd,bd->b", rows, rows).astype(np.float64)  # (b,)
            scores = 2.0 * scores - squares - query_norms[:, None]  # -(squared distance)
            np.minimum(scores, 0.0, out=scores)
        scores[np.isnan(scores)] = -np.inf  # an overflowing row ranks last, never first
        block_ids, block_scores = _block_best(ids, scores, keep)
        best_ids, best_scores = _merge(best_ids, best_scores, block_ids, block_scores, keep)
    return best_ids, best_scores


def _block_best(
    ids: np.ndarray, scores: np.ndarray, keep: int
) -> tuple[np.ndarray, np.ndarray]:
    """(q, min(keep, b)) ids and scores: each query's best rows of this block by (score desc, id
    asc), exactly, also when equal scores straddle the cut."""
    count, block = scores.shape
    take = min(keep, block)
    if take == block:
        columns = np.broadcast_to(np.arange(block), (count, block))
    else:
        columns = np.argpartition(-scores, take - 1, axis=1)[:, :take]  # (q, take), any order
        cut = np.take_along_axis(scores, columns, axis=1).min(axis=1)  # (q,) the take-th best
        straddling = np.flatnonzero((scores >= cut[:, None]).sum(axis=1) > take)
        if len(straddling):
            columns = columns.copy()
            for row in straddling:  # equal scores at the cut: the smaller ids win
                tied = np.flatnonzero(scores[row] >= cut[row])
                order = np.lexsort((ids[tied], -scores[row, tied]))[:take]
                columns[row] = tied[order]
    return ids[columns], np.take_along_axis(scores, columns, axis=1)


def _merge(
    ids_a: np.ndarray, scores_a: np.ndarray, ids_b: np.ndarray, scores_b: np.ndarray, keep: int
) -> tuple[np.ndarray, np.ndarray]:
    """The `keep` best of two candidate lists per query, sorted by (score desc, id asc)."""
    ids = np.concatenate([ids_a, ids_b], axis=1)  # (q, m)
    scores = np.concatenate([scores_a, scores_b], axis=1)  # (q, m)
    order = np.lexsort((ids, -scores), axis=1)[:, :keep]  # (q, <= keep)
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1)


__all__ = ["METRICS", "Neighbours", "Query", "most_similar"]
