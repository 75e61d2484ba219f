"""FastAPI dependencies: the registry and the settings of the running app.

They are `async def` on purpose: FastAPI runs a plain `def` dependency in the thread pool, a
thread hop per dependency per request for what is one attribute read. The app's state is
untyped (starlette's State); create_app sets each attribute, and each is given its type here.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.api.settings import Settings
from service.core.registry import TableRegistry
from service.core.snapshot_store import SnapshotStore


async def get_registry(request: Request) -> TableRegistry:
    registry: TableRegistry = request.app.state.registry
    return registry


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_snapshots(request: Request) -> SnapshotStore:
    snapshots: SnapshotStore = request.app.state.snapshots
    return snapshots


TablesDep = Annotated[TableRegistry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SnapshotsDep = Annotated[SnapshotStore, Depends(get_snapshots)]
