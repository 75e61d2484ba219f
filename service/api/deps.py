"""FastAPI dependencies: the registry and the settings of the running app."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.api.settings import Settings
from service.core.registry import TableRegistry
from service.core.snapshot_store import SnapshotStore


def get_registry(request: Request) -> TableRegistry:
    return request.app.state.registry


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_snapshots(request: Request) -> SnapshotStore:
    return request.app.state.snapshots


TablesDep = Annotated[TableRegistry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SnapshotsDep = Annotated[SnapshotStore, Depends(get_snapshots)]
