"""What a cluster-mode table is and where its rows live: the table's create fields every shard
is told (`TableSpec`), which shard of which incarnation a server holds (`Place`), and the ids of
a fixed table that hash to a shard (`own_ids`). Shards (service.cluster.shard), the catalog and
the fronts all speak of tables in these terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from service.core.initializers import InitSpec
from service.sharding import shard_of

BLOCK_ROWS = 1 << 16  # ids hashed, and initial rows drawn, this many at a time


@dataclass(frozen=True)
class TableSpec:
    """What a table is made of (the create request's fields), as every shard is told it."""

    name: str
    num_embeddings: int | None  # None: a dynamic table (ids are keys)
    embedding_dim: int
    dtype: str = "float32"
    init: dict[str, Any] | None = None
    seed: int | None = None
    optimizer: dict[str, Any] | None = None
    max_staleness: int | None = None
    dynamic: dict[str, Any] | None = None  # a dynamic table's settings (DynamicSpec's fields)

    def init_spec(self) -> InitSpec:
        return InitSpec(**(self.init or {"kind": "normal"}))


@dataclass(frozen=True)
class Place:
    """Which shard of which incarnation of a table: `generation` changes when a table of the
    same name is made again, so a request meant for the old one is told its map is stale."""

    shard: int
    shards: int
    generation: str


def own_ids(num_embeddings: int, place: Place) -> np.ndarray:
    """(n_k,) ascending: the ids in [0, num_embeddings) that hash to this shard."""
    found = [start + np.flatnonzero(shard_of(np.arange(start, min(num_embeddings,
                                                                    start + BLOCK_ROWS)),
                                             place.shards) == place.shard)
             for start in range(0, num_embeddings, BLOCK_ROWS)]
    return np.concatenate(found) if found else np.empty(0, np.int64)
