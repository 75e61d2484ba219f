"""Neighbour search against a brute-force oracle: a Python loop over the rows, float64, sorted by
(score, id) with Python's sort. Every metric, positives and negatives, items as ids, labels and
vectors, ties, k past the rows, queries in groups, small blocks (so that results merge across
many blocks) and a view with arbitrary int64 ids (the shape of a dynamic table)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from service.core import neighbors
from service.core.errors import InvalidRequest
from service.core.labels import LabelStore
from service.core.neighbors import Query, most_similar
from service.core.optimizers import make_optimizer
from service.core.rows import DenseRows
from service.core.table import EmbeddingTable


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 7 rows and groups of 3 queries: every search merges across many blocks."""
    monkeypatch.setattr(neighbors, "MIN_BLOCK_ROWS", 7)
    monkeypatch.setattr(neighbors, "BLOCK_BYTES", 1)
    monkeypatch.setattr(neighbors, "QUERY_GROUP", 3)


def make_table(weights: np.ndarray, words: Sequence[str] = ()) -> EmbeddingTable:
    table = EmbeddingTable("t", *weights.shape, make_optimizer({"kind": "sgd"}),
                           dtype=weights.dtype.name, weights=weights.copy())
    if words:
        table.labels.set(np.arange(len(words)), list(words), merge=False,
                         check_ids=table.check_ids)
    return table


def oracle(ids: Sequence[int], rows: np.ndarray, label_of: dict[str, int], query: Query,
           k: int, metric: str) -> tuple[list[int], list[float]]:
    """gensim's most_similar rules, one row at a time in float64."""
    row_of = {int(i): rows[n].astype(np.float64) for n, i in enumerate(ids)}
    total = np.zeros(rows.shape[1])
    own: set[int] = set()
    for sign, items in ((1.0, query.positive), (-1.0, query.negative)):
        for item in items:
            if isinstance(item, str | int):
                key = label_of[item] if isinstance(item, str) else item
                own.add(key)
                vector = row_of[key]
                if metric == "cosine":
                    norm = float(np.sqrt(sum(x * x for x in vector)))
                    vector = vector / norm if norm else vector
            else:
                vector = np.asarray(item, dtype=np.float64)
            total = total + sign * vector
    scored = []
    for key, row in row_of.items():
        if key in own:
            continue
        dot = float(sum(a * b for a, b in zip(row, total, strict=True)))
        if metric == "dot":
            score = dot
        elif metric == "cosine":
            norms = float(np.sqrt(sum(x * x for x in row)) * np.sqrt(sum(x * x for x in total)))
            score = dot / norms if norms else 0.0
        else:
            score = float(np.sqrt(sum((a - b) ** 2 for a, b in zip(row, total, strict=True))))
        scored.append((score, key))
    scored.sort(key=lambda pair: (pair[0] if metric == "l2" else -pair[0], pair[1]))
    return [key for _, key in scored[:k]], [score for score, _ in scored[:k]]


QUERIES = [
    Query(positive=[3]),
    Query(positive=["w5"], negative=["w9"]),
    Query(positive=["w1", 7], negative=[2]),
    Query(positive=[[0.5, -1.0, 2.0, 0.25, 1.0]]),
    Query(positive=[[1.0, 0.0, 0.0, 0.0, 0.0], "w4"], negative=[[0.0, 1.0, 0.0, 0.0, 0.0]]),
    Query(positive=[], negative=["w11"]),
]


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
@pytest.mark.parametrize("k", [1, 4, 60, 1000])
def test_matches_the_oracle_float64(metric: str, k: int) -> None:
    rng = np.random.default_rng(3)
    weights = rng.normal(size=(53, 5))  # (rows, dim) float64: no near-ties by accident
    words = [f"w{i}" for i in range(40)]
    table = make_table(weights, words)
    found = most_similar(DenseRows(table), table.labels, QUERIES, k, metric)
    assert len(found) == len(QUERIES)
    for query, result in zip(QUERIES, found, strict=True):
        ids, scores = oracle(range(53), weights, {w: i for i, w in enumerate(words)}, query, k,
                             metric)
        assert result.ids.tolist() == ids
        np.testing.assert_allclose(result.scores, scores, rtol=1e-12, atol=1e-12)
        assert result.labels == [words[i] if i < 40 else None for i in ids]
        assert len(ids) == min(k, 53 - len({i for i in query.positive if isinstance(i, int)}
                                          | {i for i in query.negative if isinstance(i, int)}
                                          | {int(i[1:]) for i in (*query.positive,
                                                                  *query.negative)
                                             if isinstance(i, str)}))


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_ties_go_to_the_smaller_id(metric: str) -> None:
    """Small integers (exact in float32): many rows equal, across block boundaries; the order is
    (score, id) exactly, and the scores are the oracle's to the last bit for dot and l2."""
    rng = np.random.default_rng(0)
    distinct = rng.integers(-3, 4, size=(6, 4)).astype(np.float32)  # (6, dim)
    weights = distinct[rng.integers(0, 6, size=90)]  # (90, 4): every row has many twins
    weights[17] = 0.0  # a zero row: cosine 0 with everything
    table = make_table(weights)
    queries = [Query(positive=[5]), Query(positive=[[1.0, 2.0, 0.0, -1.0]], negative=[40]),
               Query(positive=[[0.0, 0.0, 1.0, 0.0]])]
    for k in (1, 5, 13, 29, 95):
        found = most_similar(DenseRows(table), None, queries, k, metric)
        for query, result in zip(queries, found, strict=True):
            ids, scores = oracle(range(90), weights, {}, query, k, metric)
            assert result.ids.tolist() == ids, (k, query)
            if metric == "cosine":
                np.testing.assert_allclose(result.scores, scores, rtol=1e-6, atol=1e-6)
            else:
                np.testing.assert_array_equal(result.scores, scores)


def test_a_zero_row_scores_zero_by_cosine() -> None:
    weights = np.array([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    found = most_similar(DenseRows(make_table(weights)), None, [Query([[1.0, 0.0]])], 4)[0]
    assert found.ids.tolist() == [0, 1, 3, 2]
    np.testing.assert_array_equal(found.scores, [1.0, 0.0, 0.0, -1.0])


def test_float32_tables_rank_as_float32_computes() -> None:
    """A float32 table is scored in float32 (as numpy's W @ q): the ids are those of the float64
    oracle wherever the oracle's scores are further apart than float32 can tell."""
    rng = np.random.default_rng(7)
    weights = rng.normal(size=(400, 16)).astype(np.float32)
    table = make_table(weights)
    for metric in ("cosine", "dot", "l2"):
        result = most_similar(DenseRows(table), None, [Query([11], [12])], 20, metric)[0]
        ids, scores = oracle(range(400), weights, {}, Query([11], [12]), 20, metric)
        np.testing.assert_allclose(result.scores, scores, rtol=1e-5, atol=1e-5)
        gaps = np.diff(scores)
        if np.all(np.abs(gaps) > 1e-4):
            assert result.ids.tolist() == ids


class KeyedRows:
    """A RowView whose ids are arbitrary int64 keys in no order, as a dynamic table's."""

    def __init__(self, keys: np.ndarray, rows: np.ndarray) -> None:
        self.keys, self.rows, self.name = keys, rows, "keyed"
        self.slot_of = {int(key): slot for slot, key in enumerate(keys)}

    embedding_dim = property(lambda self: self.rows.shape[1])
    dtype = property(lambda self: self.rows.dtype)

    def live_rows(self) -> int:
        return len(self.keys)

    def blocks(self, block_rows: int, out: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(self.keys), block_rows):
            count = min(block_rows, len(self.keys) - start)
            out[:count] = self.rows[start : start + count]
            yield self.keys[start : start + count], out[:count]

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        for key in ids:
            if int(key) not in self.slot_of:
                raise InvalidRequest(f"id {int(key)} is not a live row")
        return self.rows[[self.slot_of[int(key)] for key in ids]]

    def check_label_ids(self, ids: np.ndarray) -> None:
        self.rows_of(ids)


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_a_view_with_int64_keys(metric: str) -> None:
    rng = np.random.default_rng(11)
    keys = np.unique(np.concatenate([rng.integers(-(2**62), 2**62, size=60),
                                     [-(2**63), 2**63 - 1, 0, -5]]))
    rng.shuffle(keys)
    rows = rng.integers(-2, 3, size=(len(keys), 3)).astype(np.float64)  # many ties
    view = KeyedRows(keys, rows)
    labels = LabelStore()
    labels.set(keys[:3], ["x", "y", "z"], merge=False, check_ids=view.check_label_ids)
    queries = [Query(["x"], ["y"]), Query([int(keys[10]), [1.0, 0.5, -1.0]])]
    for query, result in zip(queries, most_similar(view, labels, queries, 25, metric),
                             strict=True):
        ids, scores = oracle(keys.tolist(), rows, {"x": keys[0], "y": keys[1], "z": keys[2]},
                             query, 25, metric)
        assert result.ids.tolist() == ids
        np.testing.assert_allclose(result.scores, scores, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("query", "metric", "message"), [
    (Query([]), "cosine", "needs at least one item"),
    (Query([1], [1]), "cosine", "zero vector"),
    (Query(["nope"]), "dot", "label 'nope' names no row"),
    (Query([99]), "dot", "ids must be < num_embeddings=10"),
    (Query([[1.0, 2.0]]), "dot", "embedding_dim=3 numbers, got shape [2]"),
    (Query([[1.0, float("nan"), 0.0]]), "l2", "finite"),
    (Query([True]), "dot", "must be an id, a label or a vector"),
    (Query([1.5]), "dot", "must be an id, a label or a vector"),
    (Query([[1, True, 0]]), "dot", "boolean"),
    (Query([1]), "hamming", "metric must be one of"),
])
def test_refusals(query: Query, metric: str, message: str) -> None:
    table = make_table(np.arange(30, dtype=np.float64).reshape(10, 3), ["a", "b"])
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        most_similar(DenseRows(table), table.labels, [query], 3, metric)


@pytest.mark.parametrize("k", [0, -1, 2.0, True])
def test_k_must_be_a_positive_integer(k: Any) -> None:
    table = make_table(np.ones((4, 2)))
    with pytest.raises(InvalidRequest, match="k must be an integer >= 1"):
        most_similar(DenseRows(table), None, [Query([0])], k)


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_ties_at_the_cut_of_a_large_block(metric: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 1024 rows holding two distinct rows in shuffled key order: the k best of a
    block cut through hundreds of equal scores, and the smaller keys must win."""
    monkeypatch.setattr(neighbors, "MIN_BLOCK_ROWS", 1024)
    rng = np.random.default_rng(5)
    keys = rng.permutation(5000).astype(np.int64) * 7 - 9000  # (n,) no order
    rows = np.array([[1.0, 2.0], [2.0, -1.0]])[rng.integers(0, 2, size=5000)]  # (n, 2)
    view = KeyedRows(keys, rows)
    query = Query([[1.0, 1.0]])
    for k in (1, 10, 700):
        result = most_similar(view, None, [query], k, metric)[0]
        ids, scores = oracle(keys.tolist(), rows, {}, query, k, metric)
        assert result.ids.tolist() == ids
        np.testing.assert_allclose(result.scores, scores, rtol=1e-12)
