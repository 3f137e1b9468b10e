"""The DiracX jobs router: DiracX's ``/api/jobs`` routes (and the ``/.well-known``
documents its client reads at start) over jobgate's engine, so that DiracX's own client
(``diracx-client``, ``diracx-api``, ``dirac`` CLI) works against jobgate.

See the README's "DiracX jobs router" section for the routes, the status map and what
the client can and cannot do here.
"""

from __future__ import annotations

from fastapi import APIRouter

from jobgate.api.diracx import jobs, sandboxes, wellknown


def make_router() -> APIRouter:
    router = APIRouter()
    router.include_router(wellknown.make_router())
    # The sandbox routes first: /api/jobs/sandbox must not be taken as a job id.
    router.include_router(sandboxes.make_router())
    router.include_router(jobs.make_router())
    return router
