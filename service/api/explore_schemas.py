"""Bodies of the exploration endpoints: labels, neighbours and the 2-D projection.

Items of a neighbour query (ids, labels or vectors) are typed Any here and checked by the core
(service.core.neighbors), whose messages name the field, the position and the value."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from service.api.schemas import Strict

MAX_K = 1000
MAX_QUERIES = 256
MAX_ITEMS = 100  # positive + negative items of one query

Item = Any  # an id (integer), a label (string) or a vector (embedding_dim numbers)
ITEMS_DOC = "Ids (integers), labels (strings) or vectors (lists of embedding_dim numbers)."


class LabelsRequest(Strict):
    labels: list[Any] = Field(description="Strings of 1 to 256 characters, one label per row; "
                              "a label names one row of the table.", examples=[["king", "queen"]])
    ids: list[int] | None = Field(None, description="The row of each label; without ids the "
                                  "labels are those of rows 0, 1, 2...")
    merge: bool = Field(False, description="Keep the labels of rows not given here (default: "
                        "the given labels replace all of the table's labels).")


class LabelsReply(BaseModel):
    ids: list[int]
    labels: list[str | None] = Field(description="The label of each id; null where it has none.")


class QueryItems(Strict):
    positive: list[Item] = Field(default_factory=list, description=ITEMS_DOC)
    negative: list[Item] = Field(default_factory=list, description=ITEMS_DOC)


class NeighborsRequest(Strict):
    positive: list[Item] = Field(default_factory=list, description=ITEMS_DOC,
                                 examples=[["king", "woman"]])
    negative: list[Item] = Field(default_factory=list, description=ITEMS_DOC,
                                 examples=[["man"]])
    queries: list[QueryItems] | None = Field(
        None, max_length=MAX_QUERIES, description="Several queries in one call (instead of "
        "positive / negative); the reply is then {\"results\": [...]}, one per query.")
    k: int = Field(10, ge=1, le=MAX_K, description="How many neighbours per query.")
    metric: Literal["cosine", "dot", "l2"] = "cosine"


class Neighbors(BaseModel):
    ids: list[int] = Field(description="Best first; equal scores by smaller id.")
    scores: list[float] = Field(description="cosine or dot (higher is nearer), or l2 distance "
                                "(lower is nearer).")
    labels: list[str | None] | None = Field(
        None, description="The label of each id, when the table has labels.")


class NeighborsBatch(BaseModel):
    results: list[Neighbors]


class ProjectionReply(BaseModel):
    ids: list[int]
    points: list[list[float]] = Field(description="(x, y) of each id on the two principal axes.")
    labels: list[str | None] | None = None
    explained_variance_ratio: list[float] = Field(
        description="Share of the sample's variance along each axis.")
    live_rows: int = Field(description="Rows the table holds; the sample is a part of them.")
    step: int
