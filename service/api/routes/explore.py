"""Looking at what a table learned: labels, nearest neighbours and a 2-D projection.

Routes parse, call the core (service.core.labels, .neighbors, .projection) in the thread pool
(a search scans the whole table; labels of a large vocabulary take a while to check), and
encode. Each reaches a table through the registry and its RowView (service.core.rows), so a
dynamic table is served by the same routes once it provides a view.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from service.api import codecs
from service.api.codecs import JSON
from service.api.deps import SettingsDep, TablesDep
from service.api.errors import PayloadTooLarge
from service.api.explore_schemas import (
    MAX_ITEMS,
    LabelsReply,
    LabelsRequest,
    NeighborsBatch,
    NeighborsRequest,
    ProjectionReply,
)
from service.api.explore_schemas import Neighbors as NeighborsModel
from service.api.metrics import note_request
from service.api.schemas import ErrorReply, TableInfo
from service.core.errors import InvalidRequest
from service.core.labels import INT64_MAX, INT64_MIN
from service.core.neighbors import Neighbours, Query, most_similar
from service.core.projection import MAX_SAMPLE, project
from service.core.rows import row_view

router = APIRouter(prefix="/v1/tables", tags=["explore"])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorReply} for code in (404, 413, 422)
}


@router.put("/{name}/labels", responses=ERRORS, response_model_exclude_unset=True)
async def set_labels(
    name: str, body: LabelsRequest, request: Request, tables: TablesDep, settings: SettingsDep
) -> TableInfo:
    """Label rows: {"labels": [...]} for rows 0, 1, 2..., or {"ids": [...], "labels": [...]} for
    any rows (dynamic tables: any int64 key). The labels replace the table's labels, or with
    "merge": true are added to them. A label names one row: a duplicate is a 422, and a refused
    request changes nothing. Labels count in TableInfo's nbytes and the memory budget."""
    table = tables.get(name)
    view = row_view(table)
    if len(body.labels) > settings.max_ids_per_request:
        raise PayloadTooLarge(f"labels has {len(body.labels)} entries, more than "
                              f"max_ids_per_request={settings.max_ids_per_request}")
    if body.ids is None:
        rows = view.live_rows()
        if len(body.labels) > rows:
            raise InvalidRequest(f"labels has {len(body.labels)} entries, more than the {rows} "
                                 f"rows of table {name!r}")
        ids = np.arange(len(body.labels), dtype=np.int64)
    else:
        ids = int64_ids(body.ids, "ids")
    await run_in_threadpool(table.labels.set, ids, body.labels, merge=body.merge,
                            check_ids=view.check_label_ids)
    note_request(request, table, len(ids))
    return TableInfo(**table.info())


@router.get("/{name}/labels", responses=ERRORS)
async def get_labels(
    name: str, tables: TablesDep, settings: SettingsDep, ids: str | None = None
) -> LabelsReply:
    """The labels of `ids` (comma-separated, e.g. ?ids=1,2,3; null for an id without one), or
    without ids every labelled row, sorted by id."""
    table = tables.get(name)
    if ids is None:
        all_ids, labels = await run_in_threadpool(table.labels.items)
        return LabelsReply(ids=all_ids.tolist(), labels=[*labels])
    parts = [part.strip() for part in ids.split(",")] if ids.strip() else []
    if len(parts) > settings.max_ids_per_request:
        raise PayloadTooLarge(f"ids has {len(parts)} entries, more than "
                              f"max_ids_per_request={settings.max_ids_per_request}")
    values: list[int] = []
    for part in parts:
        try:
            values.append(int(part))
        except ValueError:
            raise InvalidRequest(f"query parameter ids must be integers separated by commas, "
                                 f"got {part!r}") from None
    id_array = int64_ids(values, "ids")
    return LabelsReply(ids=id_array.tolist(), labels=table.labels.labels_of(id_array))


@router.post(
    "/{name}/neighbors",
    responses={**ERRORS, 200: {"description": "One query: {ids, scores, labels?}; with "
                               "\"queries\": {results: [...]}, one per query."}},
    response_model=NeighborsModel | NeighborsBatch,
)
async def neighbors(
    name: str, body: NeighborsRequest, request: Request, tables: TablesDep
) -> Response:
    """The k nearest rows to positive minus negative items (gensim's most_similar): each item
    an id, a label or a vector; metric cosine (items by id or label scaled to unit length, then
    the sum too), dot or l2 (the plain sum). The query's own rows are left out. Exact: every
    row is scored, in blocks, off the event loop; best first, equal scores by smaller id."""
    table = tables.get(name)
    if body.queries is not None:
        if body.positive or body.negative:
            raise InvalidRequest("give either queries or positive / negative, not both")
        queries = [Query(query.positive, query.negative) for query in body.queries]
        if not queries:
            raise InvalidRequest("queries must hold at least one query, got []")
    else:
        queries = [Query(body.positive, body.negative)]
    for number, query in enumerate(queries):
        if len(query.positive) + len(query.negative) > MAX_ITEMS:
            where = f"queries[{number}]" if body.queries is not None else "the query"
            raise InvalidRequest(f"{where} has {len(query.positive) + len(query.negative)} "
                                 f"items, more than {MAX_ITEMS}")
    step = table.step
    found = await run_in_threadpool(most_similar, row_view(table), table.labels, queries,
                                    body.k, body.metric)
    note_request(request, table, len(queries))
    replies = [neighbours_json(result) for result in found]
    reply: dict[str, Any] = {"results": replies} if body.queries is not None else replies[0]
    return Response(codecs.dumps(reply), media_type=JSON, headers={"X-Table-Step": str(step)})


@router.get("/{name}/projection", responses=ERRORS)
async def projection(
    name: str, request: Request, tables: TablesDep, sample: int = 1000, seed: int | None = None
) -> ProjectionReply:
    """A 2-D PCA of a sample of rows (what /ui draws): the first `sample` rows by id, or with
    `seed` a uniform random sample. Each point has its id and, if any, its label."""
    table = tables.get(name)
    if not 1 <= sample <= MAX_SAMPLE:
        raise InvalidRequest(f"query parameter sample must be in [1, {MAX_SAMPLE}], got {sample}")
    if seed is not None and seed < 0:
        raise InvalidRequest(f"query parameter seed must be >= 0, got {seed}")
    step = table.step
    result = await run_in_threadpool(project, row_view(table), sample, seed)
    note_request(request, table, len(result.ids))
    labels = table.labels.labels_of(result.ids) if len(table.labels) else None
    return ProjectionReply(ids=result.ids.tolist(), points=result.points.tolist(), labels=labels,
                           explained_variance_ratio=result.explained.tolist(),
                           live_rows=result.live_rows, step=step)


def neighbours_json(result: Neighbours) -> dict[str, Any]:
    reply: dict[str, Any] = {"ids": result.ids.tolist(), "scores": result.scores.tolist()}
    if result.labels is not None:
        reply["labels"] = result.labels
    return reply


def int64_ids(values: list[int], field: str) -> np.ndarray:
    for position, value in enumerate(values):
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidRequest(f"{field}[{position}] must fit in 64 bits, got {value}")
    return np.array(values, dtype=np.int64)
