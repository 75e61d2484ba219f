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


class CreateTable(Strict):
    name: str = Field(examples=["words"])
    num_embeddings: int = Field(gt=0, examples=[10000])
    embedding_dim: int = Field(gt=0, examples=[64])
    dtype: Literal["float32", "float64"] = "float32"
    init: Init = Field(default_factory=lambda: NormalInit(kind="normal"))
    seed: int | None = Field(None, ge=0)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    max_staleness: int | None = Field(None, ge=0)


class TableInfo(BaseModel):
    name: str
    num_embeddings: int
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
    shape: list[int]
    vectors: list[list[float]]
