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
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from service import __version__
from service.api.allocator import tune_malloc
from service.api.docs_ui import install_docs
from service.api.durability import QuietStartupRefusal, durable_tables
from service.api.errors import install_error_handlers
from service.api.logs import configure_logging
from service.api.metrics import AppMetrics
from service.api.metrics import router as metrics_router
from service.api.middleware.auth import document_bearer_auth
from service.api.middleware.replies import ReplyStore
from service.api.middleware.routes import RouteTable, flat_routes, route_policy
from service.api.middleware.stack import ServiceMiddleware
from service.api.routes import explore, health, operations, snapshots, tables
from service.api.settings import Settings, get_settings
from service.api.ui_page import install_ui
from service.core import kernels
from service.core.registry import TableRegistry
from service.core.snapshot_store import SnapshotStore
from service.core.warm_up import warm_up

log = logging.getLogger("service")
DYNAMIC_WARM_UP_WAIT_SECONDS = 1.0  # enough to load the dynamic kernels from numba's cache
# The service has its own metrics (/metrics). FastAPI >= 0.16x's OpenTelemetry hooks, unused,
# still looked up three providers on every request (their cost: docs/performance.md).
NO_FASTAPI_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {}
)


def framework_layers() -> tuple[type, ...]:
    """The layers FastAPI puts in front of its routing that ServiceMiddleware stands in for:
    Starlette's 500 replies, and FastAPI's exception telemetry and app-wide body limit
    (neither used: telemetry is off, and the body limits are the service's own)."""
    layers: list[type] = [ServerErrorMiddleware]
    try:
        from fastapi._body_limit import AppBodyLimitMiddleware
        from fastapi.telemetry._asgi import ExceptionTelemetryMiddleware
    except ImportError:  # FastAPI before 0.16x has neither
        return tuple(layers)
    return (*layers, AppBodyLimitMiddleware, ExceptionTelemetryMiddleware)


class ServiceApp(FastAPI):
    """FastAPI whose middleware is the service's: one ASGI hop (ServiceMiddleware) in front of
    FastAPI's exception handlers and routing, for every request; the lifespan through
    QuietStartupRefusal."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """HTTP straight to the middleware (FastAPI's own __call__ checks, per request, for a
        root_path and the telemetry this app turns off); everything else through FastAPI."""
        if scope["type"] == "http" and self.middleware_stack is not None and not self.root_path:
            scope["app"] = self
            await self.middleware_stack(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    def build_middleware_stack(self) -> ASGIApp:
        inner = super().build_middleware_stack()
        layers = framework_layers()
        while isinstance(inner, layers):
            inner = inner.app  # type: ignore[attr-defined]
        stack: ASGIApp = ServiceMiddleware(inner, self.router.routes, self.state,
                                           lifespan=QuietStartupRefusal(inner))
        # the registry's own layers, outermost (cluster mode: service.cluster.front)
        for layer, options in getattr(self.state.registry, "middleware", lambda: [])():
            stack = layer(stack, **options)
        return stack


def tables_of(settings: Settings) -> tuple[Any, Any]:
    """The app's table registry and data-directory store: the tables in this process, or in
    cluster mode (EMBED_CLUSTER=ray) sharded over a Ray cluster (service.cluster, which alone
    imports ray, and only here). The routes use either through the same interfaces."""
    if settings.cluster == "ray":
        try:
            from service.cluster.front import cluster_tables
        except ModuleNotFoundError as error:
            if error.name != "ray":
                raise
            raise SystemExit("refusing to start: EMBED_CLUSTER=ray needs Ray, which is not "
                             "installed: pip install '.[ray]'") from None
        return cluster_tables(settings)
    registry = TableRegistry(
        memory_budget_bytes=settings.memory_budget_bytes, max_tables=settings.max_tables
    )
    return registry, SnapshotStore(
        settings.data_dir, max_bytes_per_second=settings.snapshot_max_bytes_per_second
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    kernels.use(settings.kernels)  # numba compiles (or loads its cache) here, before serving
    # and the first calls of every table operation are paid here, not by a request; the
    # dynamic tables' kernels compile in a thread (seconds without numba's cache: a dynamic
    # table made before they are ready waits for them)
    if not warm_up(dynamic_wait=DYNAMIC_WARM_UP_WAIT_SECONDS):
        log.info("dynamic tables: kernels still compiling (no numba cache); a dynamic table "
                 "made meanwhile waits for them")

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

    app = ServiceApp(
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
    app.state.registry, app.state.snapshots = tables_of(settings)
    # remembered replies are memory too: they count against the tables' budget
    app.state.idempotency = ReplyStore(
        settings.idempotency_max_keys, settings.idempotency_ttl_seconds,
        settings.idempotency_max_bytes,
    )
    app.state.registry.add_memory_holder(app.state.idempotency)
    tune_malloc(settings.malloc_mmap_threshold_bytes)
    app.state.metrics = AppMetrics(app.state.registry, app.state.idempotency)
    collector = getattr(app.state.registry, "collector", None)
    if collector is not None:  # the registry's own metrics (cluster mode: what restarts lost)
        app.state.metrics.registry.register(collector())
    app.include_router(metrics_router)
    install_error_handlers(app)
    for module in (health, tables, operations, snapshots, explore):
        app.include_router(module.router)
    install_docs(app)
    install_ui(app)
    for route in app.router.routes:  # FastAPI's own route: the API description holds no data
        if getattr(route, "path", None) == app.openapi_url:
            route_policy(open=True)(route.endpoint)  # type: ignore[attr-defined]
    if settings.token is not None:
        describe = app.openapi
        # FastAPI's documented way to extend the schema; mypy sees a method being replaced
        app.openapi = lambda: document_bearer_auth(  # type: ignore[method-assign]
            describe(), RouteTable(app.router.routes).open_paths())
    flat_routes(app.router.routes)  # FastAPI builds each route's state on first use: now, not
    # in the first request (what that costs: docs/performance.md, start-up)
    return app


app = create_app()
