"""Assembles the app: settings, the table registry, middleware, error handlers and routers.

Run it with `uvicorn service.api.main:app` (one worker: the tables live in this process).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from service import __version__
from service.api.allocator import tune_malloc
from service.api.auth import BearerAuth, document_bearer_auth
from service.api.docs_ui import install_docs
from service.api.durability import QuietStartupRefusal, durable_tables
from service.api.errors import install_error_handlers
from service.api.fast_path import BinaryFastPath
from service.api.idempotency import Idempotency, ReplyStore
from service.api.limits import BodySizeLimit, RouteLimit
from service.api.metrics import AppMetrics
from service.api.metrics import router as metrics_router
from service.api.observe import RequestObserver, configure_logging, flat_routes
from service.api.routes import explore, health, operations, snapshots, tables
from service.api.settings import Settings, get_settings
from service.api.ui_page import install_ui
from service.core import kernels
from service.core.registry import TableRegistry
from service.core.snapshot_store import SnapshotStore
from service.core.warm_up import warm_up

log = logging.getLogger("service")
# The service has its own metrics (/metrics). FastAPI >= 0.16x's OpenTelemetry hooks, unused,
# still looked up three providers on every request (their cost: docs/performance.md).
NO_FASTAPI_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {}
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    kernels.use(settings.kernels)  # numba compiles (or loads its cache) here, before serving
    warm_up()  # and the first calls of every table operation are paid here, not by a request

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with durable_tables(app):  # restore from data_dir first; snapshot on the way out
            log.info(
                "embedding service ready: memory budget %d bytes, max %d tables",
                settings.memory_budget_bytes,
                settings.max_tables,
            )
            if settings.token is None:
                log.warning("no EMBED_TOKEN set: the service is unauthenticated; anyone who can "
                            "reach its port can read and change every table")
            yield

    app = FastAPI(
        title="Embedding parameter service",
        version=__version__,
        summary="Named embedding tables in memory: lookup, gradient push, optimizer apply.",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc come from service.api.docs_ui: no CDN
        redoc_url=None,
        # operationId = the function's name (lookup, push_gradients): what generated clients
        # name their methods, instead of FastAPI's lookup_v1_tables__name__lookup_post
        generate_unique_id_function=lambda route: route.name,
        **NO_FASTAPI_TELEMETRY,
    )
    app.state.settings = settings
    app.state.registry = TableRegistry(
        memory_budget_bytes=settings.memory_budget_bytes, max_tables=settings.max_tables
    )
    # remembered replies are memory too: they count against the tables' budget
    app.state.idempotency = ReplyStore(
        settings.idempotency_max_keys, settings.idempotency_ttl_seconds,
        settings.idempotency_max_bytes,
    )
    app.state.registry.add_memory_holder(app.state.idempotency)
    tune_malloc(settings.malloc_mmap_threshold_bytes)
    if settings.binary_fast_path:  # innermost: every middleware below sees its requests
        app.add_middleware(BinaryFastPath, state=app.state, routes=app.router.routes)
    # Added first (after the fast path), so it runs innermost (after the body limit and any
    # auth): only requests that reach the routes are remembered.
    app.add_middleware(Idempotency, store=app.state.idempotency)
    app.state.metrics = AppMetrics(app.state.registry, app.state.idempotency)
    app.state.snapshots = SnapshotStore(
        settings.data_dir, max_bytes_per_second=settings.snapshot_max_bytes_per_second
    )
    app.add_middleware(
        BodySizeLimit,
        max_body_bytes=settings.max_body_bytes,
        route_limits=[RouteLimit("PUT", r"/v1/tables/[^/]+/weights", "max_weights_body_bytes",
                                 settings.max_weights_body_bytes or settings.memory_budget_bytes)],
    )
    if settings.token is not None:  # outside the body limit: a stranger's body is never read
        app.add_middleware(BearerAuth, token=settings.token.get_secret_value())
        describe = app.openapi
        # FastAPI's documented way to extend the schema; mypy sees a method being replaced
        app.openapi = lambda: document_bearer_auth(describe())  # type: ignore[method-assign]
    app.add_middleware(  # outermost: it sees every reply
        RequestObserver, metrics=app.state.metrics, routes=app.router.routes
    )
    app.add_middleware(QuietStartupRefusal)  # the lifespan only
    app.include_router(metrics_router)
    install_error_handlers(app)
    for module in (health, tables, operations, snapshots, explore):
        app.include_router(module.router)
    install_docs(app)
    install_ui(app)
    flat_routes(app.router.routes)  # FastAPI builds each route's state on first use: now, not
    # in the first request (what that costs: docs/performance.md, start-up)
    return app


app = create_app()
