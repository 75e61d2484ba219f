"""Assembles the app: settings, the table registry, middleware, error handlers and routers.

Run it with `uvicorn service.api.main:app` (one worker: the tables live in this process).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import __version__
from service.api.errors import install_error_handlers
from service.api.limits import BodySizeLimit
from service.api.routes import health, operations, tables
from service.api.settings import Settings, get_settings
from service.core.registry import TableRegistry

log = logging.getLogger("service")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info(
            "embedding service ready: memory budget %d bytes, max %d tables",
            settings.memory_budget_bytes,
            settings.max_tables,
        )
        yield

    app = FastAPI(
        title="Embedding parameter service",
        version=__version__,
        summary="Named embedding tables in memory: lookup, gradient push, optimizer apply.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.registry = TableRegistry(
        memory_budget_bytes=settings.memory_budget_bytes, max_tables=settings.max_tables
    )
    app.add_middleware(BodySizeLimit, max_body_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    for module in (health, tables, operations):
        app.include_router(module.router)
    return app


app = create_app()
