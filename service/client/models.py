"""What the client's methods return: small frozen records of the service's JSON replies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np


@dataclass(frozen=True, slots=True)
class TableInfo:
    """A table's description, as GET /v1/tables/{name} returns it. `raw` is the whole reply
    (fields added by newer services are there)."""

    name: str
    num_embeddings: int | None  # None: a dynamic table (any 64-bit id)
    embedding_dim: int
    dtype: str
    step: int
    pending_rows: int
    nbytes: int
    optimizer: dict[str, Any]
    init: dict[str, Any]
    seed: int | None = None
    max_staleness: int | None = None
    labels: int = 0  # rows with a label
    dynamic: dict[str, Any] | None = None  # a dynamic table's settings, defaults filled in
    rows: int | None = None  # a dynamic table's live rows
    evicted_rows: int | None = None  # rows a dynamic table evicted so far
    shards: int = 1  # servers the table's rows are spread over (cluster mode)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int | None, int]:
        """(num_embeddings, embedding_dim); (None, embedding_dim) for a dynamic table."""
        return (self.num_embeddings, self.embedding_dim)

    @property
    def is_dynamic(self) -> bool:
        return self.dynamic is not None

    @classmethod
    def from_json(cls, reply: dict[str, Any]) -> TableInfo:
        return cls(
            name=reply["name"],
            num_embeddings=reply["num_embeddings"],
            embedding_dim=reply["embedding_dim"],
            dtype=reply["dtype"],
            step=reply["step"],
            pending_rows=reply["pending_rows"],
            nbytes=reply["nbytes"],
            optimizer=reply.get("optimizer", {}),
            init=reply.get("init", {}),
            seed=reply.get("seed"),
            max_staleness=reply.get("max_staleness"),
            labels=reply.get("labels", 0),
            dynamic=reply.get("dynamic"),
            rows=reply.get("rows"),
            evicted_rows=reply.get("evicted_rows"),
            shards=reply.get("shards", 1),
            raw=reply,
        )


@dataclass(frozen=True, slots=True)
class PushResult:
    """A gradient push: id entries pushed, distinct rows now pending, the table step, and the
    rows updated at once (apply=True only)."""

    rows: int
    pending_rows: int
    step: int
    rows_updated: int = 0
    replayed: bool = False  # the server answered a retry with the first attempt's reply
    dropped_rows: int | None = None  # dynamic tables: id entries of keys not admitted yet

    @classmethod
    def from_json(cls, reply: dict[str, Any], replayed: bool = False) -> PushResult:
        return cls(reply["rows"], reply["pending_rows"], reply["step"],
                   reply.get("rows_updated", 0), replayed, reply.get("dropped_rows"))


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """An optimizer step: the table step after it and the rows it updated (0: nothing pending)."""

    step: int
    rows_updated: int
    replayed: bool = False

    @classmethod
    def from_json(cls, reply: dict[str, Any], replayed: bool = False) -> ApplyResult:
        return cls(reply["step"], reply["rows_updated"], replayed)


@dataclass(frozen=True, slots=True)
class Neighbours:
    """The nearest rows to one query, best first (equal scores: smaller id first). `scores` are
    cosine similarities or dot products (higher is nearer) or l2 distances (lower is nearer);
    `labels` holds each row's label (None where it has none) when the table has labels."""

    ids: np.ndarray  # (n,) int64
    scores: np.ndarray  # (n,) float64
    labels: list[str | None] | None = None

    def items(self) -> list[tuple[str | int, float]]:
        """[(label, or id where unlabelled, score)], as gensim's most_similar returns."""
        names = self.labels or [None] * len(self.ids)
        return [(name if name is not None else int(row), float(score))
                for row, name, score in zip(self.ids, names, self.scores, strict=True)]

    @classmethod
    def from_json(cls, reply: dict[str, Any]) -> Neighbours:
        return cls(np.asarray(reply["ids"], dtype=np.int64),
                   np.asarray(reply["scores"], dtype=np.float64), reply.get("labels"))


class KeyedWeights(NamedTuple):
    """A dynamic table's weights: `ids, weights = client.export_weights("users")`."""

    ids: np.ndarray  # (n,) int64, ascending
    weights: np.ndarray  # (n, embedding_dim)


class Lookup(NamedTuple):
    """Rows and the table step they were read at: `vectors, step = client.lookup_with_step(...)`."""

    vectors: np.ndarray  # ids.shape + (embedding_dim,)
    step: int


__all__ = ["ApplyResult", "KeyedWeights", "Lookup", "Neighbours", "PushResult", "TableInfo"]
