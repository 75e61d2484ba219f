from __future__ import annotations

from fastapi import APIRouter

from service.api.middleware.routes import route_policy
from service.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz")
@route_policy(open=True)
async def healthz() -> Health:
    """Liveness: 200 while the process serves requests."""
    return Health(status="ok")
