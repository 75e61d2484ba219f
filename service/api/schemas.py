"""Pydantic models of the JSON bodies: they validate table creation and document every reply in
the OpenAPI schema. Array bodies (ids, grads) are parsed by service.api.codecs, not here: pydantic
on a 4096 x 64 nested list is slow and its messages on ragged lists are unreadable."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class Strict(BaseModel):
    """Unknown fields refused; no coercion ("yes" is not a boolean, 10.5 not an integer)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class NormalInit(Strict):
    kind: Literal["normal"]
    std: FiniteFloat = Field(0.01, ge=0)


class UniformInit(Strict):
    kind: Literal["uniform"]
    low: FiniteFloat = -0.05
    high: FiniteFloat = 0.05

    @model_validator(mode="after")
    def _ordered(self) -> UniformInit:
        if self.low > self.high:
            raise ValueError(f"init.low must be <= init.high, got low={self.low}, high={self.high}")
        return self


class ZerosInit(Strict):
    kind: Literal["zeros"]


Init = Annotated[NormalInit | UniformInit | ZerosInit, Field(discriminator="kind")]


class OptimizerConfig(BaseModel):
    """{"kind": "sgd"|"momentum"|"adagrad"|"adam", plus that optimizer's hyper-parameters}.
    The core checks the parameters (names and ranges) and names any that is wrong."""

    model_config = ConfigDict(extra="allow")
    kind: Literal["sgd", "momentum", "adagrad", "adam"] = "sgd"


class DynamicSettings(Strict):
    """A dynamic table: any 64-bit integer id, a row made on first use (service.core.dynamic)."""

    capacity: int | None = Field(None, ge=1, description="Live rows kept after each step; the "
                                 "rest are evicted (null: no limit but the memory budget).")
    admit_after: int = Field(1, ge=1, description="Pushes a key must appear in before it gets a "
                             "row; the gradient pushed before that is dropped (dropped_rows).")
    evict: Literal["lru", "lfu"] = Field("lru", description="Over capacity, the least recently "
                                         "(lru) or least often (lfu) updated rows leave first, "
                                         "ties to the smaller key.")
    ttl_steps: int | None = Field(None, ge=1, description="Rows not updated in the last "
                                  "ttl_steps steps leave (null: never for age).")
    max_candidates: int = Field(1_000_000, ge=1, description="Keys not admitted yet whose "
                                "pushes are counted at once (admit_after > 1); beyond it the "
                                "least recently seen are forgotten.")


class CreateTable(Strict):
    name: str = Field(examples=["words"])
    num_embeddings: int | None = Field(None, gt=0, examples=[10000], description=(
        "Rows of a fixed table (ids 0..num_embeddings-1); leave out for a dynamic table."))
    embedding_dim: int = Field(gt=0, examples=[64])
    dtype: Literal["float32", "float64"] = "float32"
    init: Init = Field(default_factory=lambda: NormalInit(kind="normal"))
    seed: int | None = Field(None, ge=0)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    max_staleness: int | None = Field(None, ge=0)
    dynamic: DynamicSettings | None = Field(None, description=(
        "Make a dynamic table (any 64-bit id, rows made on first use) with these settings; "
        "instead of num_embeddings."))
    shards: int | None = Field(
        None, ge=1, le=1024, description="Cluster mode: shard servers the table's rows are "
        "spread over (default EMBED_SHARDS). A single-process service holds a table in one.")

    @model_validator(mode="after")
    def _one_kind(self) -> CreateTable:
        if (self.num_embeddings is None) == (self.dynamic is None):
            raise ValueError(
                "give either num_embeddings (a table of ids 0..num_embeddings-1) or dynamic "
                "(any 64-bit id, rows made on first use), not "
                + ("both" if self.dynamic is not None else "neither"))
        return self


class TableInfo(BaseModel):
    name: str
    num_embeddings: int | None = Field(description="null for a dynamic table.")
    embedding_dim: int
    dtype: str
    init: dict[str, Any]
    seed: int | None
    optimizer: dict[str, Any]
    max_staleness: int | None
    step: int
    pending_rows: int
    labels: int = Field(0, description="Rows with a label (PUT /v1/tables/{name}/labels).")
    nbytes: int
    dynamic: DynamicSettings | None = Field(None, description="A dynamic table's settings, "
                                            "defaults filled in (absent for a fixed table).")
    rows: int | None = Field(None, description="A dynamic table's live rows.")
    evicted_rows: int | None = Field(None, description="Rows a dynamic table evicted so far.")
    shards: int = Field(1, description="Shard servers holding the table's rows (1: this "
                        "process).")


class ShardMapReply(BaseModel):
    """Where a table's rows are served (the SDK's map for sending each id to its shard)."""

    name: str
    generation: str = Field(description="Changes when a table of this name is made again.")
    version: str = Field(description="Changes whenever a shard server moves.")
    urls: list[str] = Field(description="Shard k's server is urls[k]; none: this service "
                            "serves every row itself.")
    num_embeddings: int | None = Field(description="None: a dynamic table (ids are keys).")
    embedding_dim: int
    dtype: str
    max_ids_per_request: int
    max_rows_bytes: int


class TableList(BaseModel):
    tables: list[TableInfo]


class LookupRequest(Strict):
    ids: Any = Field(description="An integer id or a nested list of integer ids.")


class LookupReply(BaseModel):
    shape: list[int]
    step: int
    vectors: Any = Field(description="Nested list of shape `shape`.")


class PushRequest(Strict):
    ids: Any = Field(description="An integer id or a nested list of integer ids.")
    grads: Any = Field(description="Nested list of shape ids.shape + [embedding_dim].")
    apply: bool = Field(False, description="Update the pushed rows at once (asynchronous mode).")
    step: int | None = Field(None, description="Table step the gradient was computed at.")


class PushReply(BaseModel):
    rows: int
    pending_rows: int
    step: int
    rows_updated: int = 0
    dropped_rows: int | None = Field(None, description="Dynamic tables: id entries whose key "
                                     "was not admitted yet (their gradient was dropped).")


class ApplyRequest(Strict):
    lr: FiniteFloat | None = Field(None, gt=0)
    average: bool = False


class ApplyReply(BaseModel):
    step: int
    rows_updated: int


class Health(BaseModel):
    status: Literal["ok"]


class ErrorReply(BaseModel):
    detail: str


class SnapshotTable(BaseModel):
    name: str
    step: int = Field(description="The table's step as written.")
    bytes: int
    seconds: float


class SnapshotReply(BaseModel):
    tables: list[SnapshotTable] = Field(description="Tables written by this snapshot.")
    unchanged: list[str] = Field(description="Tables whose last snapshot is still current.")
    bytes: int
    seconds: float


class WeightsJson(BaseModel):
    ids: list[int] | None = Field(None, description="A dynamic table's keys, ascending.")
    shape: list[int]
    vectors: list[list[float]]
