"""What the catalog (service.cluster.catalog) keeps of each table and shard server, and what
shard restarts lost: its whole state, rebuilt from the servers when Ray restarts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from service.cluster.placement import TableSpec


@dataclass
class TableRecord:
    """A table: its spec, its shard servers (by shard) and the state of its snapshots."""

    spec: TableSpec
    shards: int
    generation: str
    servers: list[str]
    version: int = 0  # moves whenever a server's address does
    committed: list[int] | None = None  # each shard's change count at its last snapshot


@dataclass
class ServerRecord:
    """A shard server: where it serves, which start of it, and which shard it holds."""

    url: str | None
    incarnation: str
    table: str | None = None
    shard: int = -1


@dataclass
class Losses:
    """What shard restarts lost, by table (service.cluster.metrics shows them)."""

    restarts: dict[str, int] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
