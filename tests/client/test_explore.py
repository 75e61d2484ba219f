"""set_labels, get_labels, most_similar and most_similar_batch: both clients, both transports,
checked against a float64 numpy search over the exported table."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.client import InvalidRequestError, Neighbours


def cosine_best(weights: np.ndarray, query: np.ndarray, exclude: set[int], k: int) -> list[int]:
    rows = weights.astype(np.float64)
    scores = rows @ query / (np.linalg.norm(rows, axis=1) * np.linalg.norm(query))
    return [int(i) for i in np.argsort(-scores, kind="stable") if i not in exclude][:k]


def test_labels_and_most_similar(client: Any, table_name: str) -> None:
    client.create_table(table_name, 40, 6, dtype="float64", seed=2)
    words = [f"word{i}" for i in range(40)]
    info = client.set_labels(table_name, words[:30])
    assert info.labels == 30
    assert client.set_labels(table_name, ["late"], ids=np.array([39]), merge=True).labels == 31
    assert client.get_labels(table_name, [0, 35, 39]) == {0: "word0", 39: "late"}
    assert len(client.get_labels(table_name)) == 31

    weights = np.asarray(client.export_weights(table_name))
    unit = weights / np.linalg.norm(weights, axis=1, keepdims=True)
    found = client.most_similar(table_name, positive=["word1", 7], negative=["word2"], k=5)
    assert isinstance(found, Neighbours)
    expected = cosine_best(weights, unit[1] + unit[7] - unit[2], {1, 2, 7}, 5)
    assert found.ids.tolist() == expected
    assert found.labels == [words[i] if i < 30 else ("late" if i == 39 else None)
                            for i in expected]
    assert found.items()[0] == (found.labels[0] or int(found.ids[0]), found.scores[0])
    # a vector item, numpy arrays included, excludes nothing
    vector = client.most_similar(table_name, positive=np.asarray(weights[3]), k=2)
    assert vector.ids.tolist()[0] == 3

    batch = client.most_similar_batch(
        table_name, [{"positive": ["word1", 7], "negative": ["word2"]}, {"positive": [5]}],
        k=5, metric="dot")
    assert [len(result.ids) for result in batch] == [5, 5]
    dots = weights @ (weights[1] + weights[7] - weights[2])
    assert batch[0].ids.tolist() == [int(i) for i in np.argsort(-dots, kind="stable")
                                     if i not in {1, 2, 7}][:5]
    np.testing.assert_allclose(batch[0].scores, np.sort(dots[batch[0].ids])[::-1], rtol=1e-12)

    with pytest.raises(InvalidRequestError, match="label 'nope' names no row"):
        client.most_similar(table_name, positive=["nope"])
    with pytest.raises(InvalidRequestError, match="repeats label"):
        client.set_labels(table_name, ["a", "a"])
    assert client.get_table(table_name).labels == 31
