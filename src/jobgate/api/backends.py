"""``GET /api/v1/backends``: the backends this gateway drives and the kinds it knows.

The TES service-info keeps only spec fields (clients such as py-tes refuse a document
with others), so the per-backend listing lives here, in the native API.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from jobgate.api.deps import Services, services
from jobgate.backends import registry

Svc = Annotated[Services, Depends(services)]


class BackendInfo(BaseModel):
    name: str = Field(description="What jobs route by (`backend`, a zone).")
    kind: str = Field(description="The backend kind (a config file's `type`).")
    default: bool = Field(description="Whether jobs that name no backend run here.")
    backend_parameters: list[str] = Field(
        description="`resources.backend_parameters` keys this backend accepts."
    )
    facts: dict[str, str] = Field(description="What the backend says of itself (runtime …).")


class KindOption(BaseModel):
    name: str
    type: str
    required: bool
    default: Any = None
    description: str


class KindInfo(BaseModel):
    kind: str
    available: bool
    summary: str | None = None
    options: list[KindOption] | None = None
    error: str | None = Field(default=None, description="Why an unavailable kind did not load.")


class BackendsInfo(BaseModel):
    default_backend: str
    backends: list[BackendInfo]
    kinds: list[KindInfo] = Field(description="Every installed kind, usable or not.")


def backends_info(svc: Services) -> dict[str, Any]:
    """The configured backends (in configuration order) and the installed kinds."""
    default = svc.jobs.default_backend
    return {
        "default_backend": default,
        "backends": [
            {
                "name": name,
                "kind": registry.kind_of(b),
                "default": name == default,
                "backend_parameters": sorted({"backend", *b.parameter_keys}),
                "facts": b.describe(),
            }
            for name, b in svc.backends.items()
        ],
        "kinds": registry.catalog().describe(),
    }


def make_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["backends"])

    # Authenticated (any caller): unlike service-info it shows the site's setup and errors.
    @router.get("/backends", summary="Backends and backend kinds", response_model=BackendsInfo)
    async def get_backends(svc: Svc) -> dict[str, Any]:
        """The configured backends (name, kind, default, accepted `backend_parameters`,
        facts) and every installed backend kind with its options, or why it is unavailable."""
        return backends_info(svc)

    return router
