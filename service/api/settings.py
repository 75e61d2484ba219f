"""Every setting of the service, read from environment variables prefixed EMBED_ (EMBED_PORT...)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.core.registry import total_memory_bytes


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMBED_", extra="ignore", frozen=True)

    max_body_bytes: int = Field(
        256 * 2**20, gt=0, description="Largest request body accepted; larger ones get 413."
    )
    max_ids_per_request: int = Field(
        4 * 2**20, gt=0, description="Most ids one lookup or push may carry; more get 413."
    )
    max_rows_bytes: int = Field(
        256 * 2**20, gt=0, description="Most bytes of rows one lookup or push may make the "
        "service hold: ids x embedding_dim x the table's itemsize (a lookup's reply, a push's "
        "gradients; a JSON reply counts its longest possible text); more get 413, before "
        "anything is allocated."
    )
    max_tables: int = Field(1000, gt=0, description="Most tables the service holds at once.")
    memory_budget_bytes: int = Field(
        0,
        ge=0,
        description="Bytes all tables (weights, optimizer state, pending gradients) may use; "
        "0 means 75% of this machine's (or container's) memory.",
    )
    max_json_depth: int = Field(
        32, gt=0, description="Deepest nesting of JSON arrays accepted in ids and grads."
    )
    data_dir: Path = Field(Path("data"), description="Where snapshots are written and read.")
    snapshot_interval_seconds: float = Field(
        0.0, ge=0, description="Seconds between periodic snapshots of the tables that changed; "
        "0 turns periodic snapshots off."
    )
    snapshot_on_shutdown: bool = Field(
        True, description="Snapshot every changed table on graceful shutdown (SIGTERM, SIGINT)."
    )
    skip_damaged_snapshots: bool = Field(
        False, description="Start even if a snapshot in data_dir is damaged: log it, move it to "
        "data_dir/damaged and start without that table (default: refuse to start)."
    )
    snapshot_max_bytes_per_second: int = Field(
        0, ge=0, description="Throttle for snapshot writes, to leave disk bandwidth to others; "
        "0 writes as fast as the disk allows."
    )
    max_weights_body_bytes: int = Field(
        0, ge=0, description="Largest PUT /v1/tables/{name}/weights body (one .npy of the whole "
        "table); 0 means memory_budget_bytes. Other bodies keep max_body_bytes."
    )
    max_json_weights_bytes: int = Field(
        8 * 2**20, ge=0, description="Largest table (weights bytes) GET .../weights answers in "
        "JSON; larger tables are served as .npy only."
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info", description="Log level of the service's loggers (one JSON access line a request "
        "at info): debug, info, warning, error, critical."
    )
    token: SecretStr | None = Field(
        None, description="Bearer token every request but /healthz, /metrics and the API docs "
        "must carry (Authorization: Bearer <token>); unset means no authentication."
    )
    idempotency_max_keys: int = Field(
        100_000,
        ge=0,
        description="Most Idempotency-Key replies remembered at once (oldest forgotten first); "
        "0 turns idempotency keys off.",
    )
    idempotency_ttl_seconds: float = Field(
        600.0, gt=0, description="How long the reply to an Idempotency-Key is remembered."
    )
    idempotency_max_bytes: int = Field(
        64 * 2**20, ge=0, description="Most bytes the remembered Idempotency-Key replies may "
        "take (oldest forgotten first); they count against memory_budget_bytes."
    )
    binary_fast_path: bool = Field(
        True, description="Serve .npy/.npz lookups and pushes on a pure-ASGI path that skips "
        "FastAPI's routing and dependency injection (same replies, byte for byte); false sends "
        "them through the FastAPI routes."
    )
    inline_max_bytes: int = Field(
        2 * 2**20, ge=0, description="Lookups and pushes of at most this many bytes of rows "
        "(ids x embedding_dim x itemsize) run on the event loop when their table is free (a "
        "thread hop costs more than the work); larger ones run in the thread pool (a binary "
        "lookup's reply then goes out while its rows are read). 0: always the thread pool."
    )
    kernels: Literal["numba", "numpy"] = Field(
        "numba", description="The core's hot loops (scatter-add, optimizer steps, finding pushed "
        "rows): numba compiles them at start (or loads them from its cache) before the service "
        "reports ready; numpy runs the same arithmetic, bit for bit, without compiling."
    )
    malloc_mmap_threshold_bytes: int = Field(
        32 * 2**20, ge=0, le=32 * 2**20, description="glibc only: blocks below this size "
        "(reply buffers, request bodies) are reused from the heap instead of fresh pages "
        "mapped, and page-faulted, for every request; up to twice this much freed memory may "
        "stay resident. 0 leaves glibc's default."
    )

    # -- the server (python -m service.api): connections and shutdown ------------------------
    max_connections: int = Field(
        1000, gt=0, description="Most open connections; one more is answered 503 and closed "
        "at once. Keep it under the process's file limit (raised to its hard limit at start)."
    )
    request_head_timeout_seconds: float = Field(
        10.0, gt=0, description="A request's line and headers must arrive within this many "
        "seconds of its first byte (of the connection, for a new one), or it gets 408 and the "
        "connection is closed."
    )
    request_body_timeout_seconds: float = Field(
        30.0, gt=0, description="A request body may fall this many seconds behind "
        "request_body_min_bytes_per_second (its deadline moves on with every byte that "
        "arrives), or it gets 408 and the connection is closed."
    )
    request_body_min_bytes_per_second: int = Field(
        65536, gt=0, description="The slowest upload rate that never times out (see "
        "request_body_timeout_seconds)."
    )
    keep_alive_seconds: float = Field(
        5.0, gt=0, description="An idle keep-alive connection is closed after this many seconds."
    )
    graceful_shutdown_seconds: float = Field(
        20.0, ge=0, description="On SIGTERM/SIGINT, requests still running after this many "
        "seconds are cancelled; then the shutdown snapshot is written."
    )

    # -- cluster mode (service.cluster, Ray): tables sharded over many processes ---------------
    cluster: Literal["", "ray"] = Field(
        "", description="'ray' serves tables sharded over shard servers on a Ray cluster (pip "
        "install '.[ray]'); empty keeps every table in this process."
    )
    ray_address: str = Field(
        "", description="Cluster mode: empty starts a Ray instance on this machine, owned by "
        "this process (stopped with it); 'auto', 'host:port' or 'ray://host:port' joins a "
        "running Ray cluster, where the tables outlive any one front."
    )
    ray_namespace: str = Field(
        "embedding-service", min_length=1, description="Cluster mode: the Ray namespace of "
        "the service's actors (one service per namespace and data directory)."
    )
    shards: int = Field(
        2, ge=1, le=1024, description="Cluster mode: shards of a new table (the create body's "
        "\"shards\" overrides it), and of a table restored from a single-process snapshot."
    )
    restore_shards: int = Field(
        0, ge=0, le=1024, description="Cluster mode: restore every table into this many shards "
        "(re-sharding); 0 keeps the count each snapshot was written with."
    )
    ray_shard_resources: dict[str, float] = Field(
        default_factory=dict, description="Cluster mode: Ray resources each shard server asks "
        "for, as JSON (e.g. {\"embed_shards\": 1} to run them only on the nodes started with "
        "that resource); empty: any node, spread."
    )
    cluster_advertise_host: str = Field(
        "", description="Cluster mode: the address shard servers give out for their own HTTP "
        "(what the SDK and fronts connect to); empty: the Ray node's IP address."
    )

    @field_validator("log_level", "kernels", "cluster", mode="before")
    @classmethod
    def _lowercase_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("token", mode="after")
    @classmethod
    def _blank_token_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value().strip() else None

    @model_validator(mode="after")
    def _default_budget(self) -> Settings:
        if self.memory_budget_bytes == 0:
            object.__setattr__(self, "memory_budget_bytes", int(total_memory_bytes() * 0.75))
        if self.max_weights_body_bytes == 0:  # the limit a weight import's route names
            object.__setattr__(self, "max_weights_body_bytes", self.memory_budget_bytes)
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
