"""Joining Ray: the fronts' connection, the actors' names, and Ray's errors turned back into ours.

    connection = connect(settings)       # EMBED_RAY_ADDRESS: "" starts a local instance
    catalog = connection.catalog         # the one catalog of this namespace (made if missing)
    result(catalog.describe.remote("words"))   # TableNotFound comes back as itself
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from service.api.settings import Settings
from service.core.errors import EmbeddingServiceError, ShardUnavailable

log = logging.getLogger("service.cluster")

CATALOG = "embed-catalog"
SERVER_PREFIX = "embed-server-"
OBJECT_STORE_BYTES = 256 * 2**20  # a local instance's object store: the service passes little
# through it (weights imports, snapshots' control), so it need not take 30% of the machine


def result(ref: Any, timeout: float | None = None) -> Any:
    """ray.get, with a service error raised in the actor raised here as itself, and an actor
    that died or does not answer as ShardUnavailable (503, retried by the SDK)."""
    try:
        return ray.get(ref, timeout=timeout)
    except RayTaskError as error:
        cause = getattr(error, "cause", None)
        if isinstance(cause, EmbeddingServiceError):
            raise cause from None
        raise
    except (RayActorError, GetTimeoutError) as error:
        raise ShardUnavailable(f"a shard server or the catalog is not reachable "
                               f"({type(error).__name__}); retry shortly") from None


def settings_payload(settings: Settings) -> dict[str, Any]:
    """The settings as the catalog and the shard servers are given them: plain values, the
    token itself (a SecretStr dumps as stars), the data directory absolute (Ray's worker
    processes do not run in the front's working directory)."""
    payload = settings.model_dump(mode="json")
    payload["token"] = settings.token.get_secret_value() if settings.token else None
    payload["data_dir"] = str(settings.data_dir.resolve())
    return payload


@dataclass
class Connection:
    owner: bool  # this process started the Ray instance (and stops it)
    namespace: str
    catalog: Any

    def close(self) -> None:
        if ray.is_initialized():
            ray.shutdown()


def connect(settings: Settings) -> Connection:
    """Join (or, with EMBED_RAY_ADDRESS empty, start) Ray and find or make the catalog."""
    from service.cluster.catalog import catalog_actor

    namespace = settings.ray_namespace
    owner = not settings.ray_address
    if not ray.is_initialized():
        if owner:
            ray.init(namespace=namespace, include_dashboard=False, logging_level=logging.WARNING,
                     object_store_memory=OBJECT_STORE_BYTES, configure_logging=False)
        else:
            ray.init(address=settings.ray_address, namespace=namespace,
                     logging_level=logging.WARNING, configure_logging=False)
    catalog = catalog_actor().options(  # on the head node: the one a cluster keeps
        name=CATALOG, namespace=namespace, get_if_exists=True, lifetime="detached",
        max_restarts=-1, max_concurrency=64, num_cpus=0,
        resources={"node:__internal_head__": 0.001},
    ).remote(settings_payload(settings), owner)
    return Connection(owner, namespace, catalog)
