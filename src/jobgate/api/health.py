"""Liveness and readiness."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from sqlalchemy import text

from jobgate.api.deps import Services, services
from jobgate.api.security import public


def make_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    @public
    async def healthz(svc: Annotated[Services, Depends(services)]) -> dict[str, Any]:
        """200 when the database answers; the body says which runtime and backends run."""
        async with svc.jobs.store.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return {
            "status": "ok",
            "backends": {name: b.describe() for name, b in svc.backends.items()},
        }

    return router
