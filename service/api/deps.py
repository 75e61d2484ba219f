"""FastAPI dependencies: the registry and the settings of the running app.

They are `async def` on purpose: FastAPI runs a plain `def` dependency in the thread pool, a
thread hop (about 100 us each, measured in bench/) per dependency per request for what is one
attribute read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.api.settings import Settings
from service.core.registry import TableRegistry
from service.core.snapshot_store import SnapshotStore


async def get_registry(request: Request) -> TableRegistry:
    return request.app.state.registry


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_snapshots(request: Request) -> SnapshotStore:
    return request.app.state.snapshots


TablesDep = Annotated[TableRegistry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SnapshotsDep = Annotated[SnapshotStore, Depends(get_snapshots)]
