"""Table management: create, list, describe, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from service.api.deps import SettingsDep, SnapshotsDep, TablesDep
from service.api.schemas import CreateTable, ErrorReply, ShardMapReply, TableInfo, TableList
from service.core.initializers import InitSpec

router = APIRouter(prefix="/v1/tables", tags=["tables"])
ERRORS: dict[int | str, dict[str, Any]] = {404: {"model": ErrorReply}, 422: {"model": ErrorReply}}


@router.post(
    "",
    status_code=201,
    responses={409: {"model": ErrorReply}, 413: {"model": ErrorReply}, 422: {"model": ErrorReply}},
    response_model_exclude_unset=True,
)
async def create_table(spec: CreateTable, tables: TablesDep) -> TableInfo:
    """Create a table of shape (num_embeddings, embedding_dim) with its optimizer, or with
    `dynamic` settings (and no num_embeddings) a dynamic table: any 64-bit integer id, a row
    made on first use, admission and eviction. In cluster mode its rows are spread over
    `shards` shard servers."""
    init = InitSpec(**spec.init.model_dump())
    table = await run_in_threadpool(  # allocating and filling a large table takes a while,
        # and the registry's lock may be waited for
        tables.create,
        spec.name,
        spec.num_embeddings,
        spec.embedding_dim,
        dtype=spec.dtype,
        init=init,
        seed=spec.seed,
        optimizer=spec.optimizer.model_dump(),
        max_staleness=spec.max_staleness,
        dynamic=spec.dynamic.model_dump() if spec.dynamic is not None else None,
        shards=spec.shards,
    )
    return TableInfo(**table.info())


@router.get("", response_model_exclude_unset=True)
async def list_tables(tables: TablesDep) -> TableList:
    return TableList(tables=[TableInfo(**table.info()) for table in tables])


@router.get("/{name}", responses=ERRORS, response_model_exclude_unset=True)
async def get_table(name: str, tables: TablesDep) -> TableInfo:
    return TableInfo(**tables.get(name).info())


@router.get("/{name}/shards", responses=ERRORS)
async def table_shards(name: str, tables: TablesDep, settings: SettingsDep) -> ShardMapReply:
    """Where the table's rows are served: in cluster mode each shard server's URL, by which the
    SDK sends each id straight to its shard (service.client._routing); a single-process
    service lists none (it serves every row). With the limits the shards apply as this service
    does, so that only requests it would accept are sent to them."""
    table = tables.get(name)
    served = await run_in_threadpool(tables.shard_map, name)
    return ShardMapReply(name=name, **served,
                         num_embeddings=getattr(table, "num_embeddings", None),
                         embedding_dim=table.embedding_dim, dtype=table.dtype.name,
                         max_ids_per_request=settings.max_ids_per_request,
                         max_rows_bytes=settings.max_rows_bytes)


@router.delete("/{name}", status_code=204, responses={**ERRORS, 503: {"model": ErrorReply}})
async def delete_table(name: str, tables: TablesDep, snapshots: SnapshotsDep) -> Response:
    """Delete the table and its snapshot (it does not come back after a restart). 503 if the
    disk refuses to remove the snapshot: then nothing was deleted, and a retry completes it.
    In the thread pool: it waits for the registry's and the data directory's locks."""
    await run_in_threadpool(snapshots.delete_table, tables, name)
    return Response(status_code=204)
