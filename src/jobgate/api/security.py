"""Authentication for every route, and the per-request :class:`Access` routes use.

The app runs :func:`authenticate` before every API route; a route opts out only by being
decorated with :func:`public` (health, service-info). FastAPI's own docs routes
(``/docs``, ``/redoc``, ``/openapi.json``) are not API routes and stay public.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request

from jobgate.api.dashboard import session
from jobgate.api.deps import Services, services
from jobgate.auth.identity import Caller
from jobgate.auth.jobtokens import PREFIX as JOB_TOKEN_PREFIX
from jobgate.auth.policy import Access
from jobgate.errors import Unauthorized
from jobgate.service.native import Submitter

F = TypeVar("F", bound=Callable[..., Any])
PUBLIC_ATTR = "__jobgate_public__"


def public(fn: F) -> F:
    """Mark a route's endpoint as needing no authentication."""
    setattr(fn, PUBLIC_ATTR, True)
    return fn


def is_public(endpoint: object) -> bool:
    return bool(getattr(endpoint, PUBLIC_ATTR, False))


async def authenticate(request: Request) -> None:
    """Set ``request.state.caller`` from the request's credentials (401 without valid ones)."""
    if is_public(request.scope.get("endpoint")):
        return
    svc: Services = request.app.state.services
    header = request.headers.get("authorization")
    if header is None:
        # A dashboard page's request: the session cookie stands for the login's credential.
        caller = await session.cookie_caller(request, svc)
        if caller is not None:
            request.state.caller = caller
            return
    if header is not None and header.startswith(f"Bearer {JOB_TOKEN_PREFIX}"):
        # A job's own token: no scope, good only for that job's heartbeat route.
        job_id = svc.job_tokens.verify(header.removeprefix("Bearer "))
        if job_id is None:
            raise Unauthorized("invalid job token")
        request.state.job_token = job_id
        request.state.caller = Caller(f"job:{job_id}", "job-token", frozenset())
        return
    request.state.caller = await svc.auth.authenticate(header)


def current_caller(request: Request) -> Caller:
    caller: Caller = request.state.caller
    return caller


async def access(request: Request, svc: Annotated[Services, Depends(services)]) -> Access:
    return Access(current_caller(request), svc.policy, svc.jobs)


Acc = Annotated[Access, Depends(access)]


async def submitter(acc: Access, svc: Services) -> Submitter:
    """Check that the caller may submit now (403/429) and describe them for new jobs."""
    acc.check_submit()
    sealed = None
    if svc.jobs.credential_backends and acc.caller.credential:
        sealed = svc.secrets.encrypt(acc.caller.credential)
    return Submitter(acc.owner, acc.policy.share_group(acc.caller), sealed)
