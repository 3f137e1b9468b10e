"""Authentication for every route, and the per-request :class:`Access` routes use.

The app runs :func:`authenticate` before every API route; a route opts out only by being
decorated with :func:`public` (health, service-info). FastAPI's own docs routes
(``/docs``, ``/redoc``, ``/openapi.json``) are not API routes and stay public.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

from fastapi import Depends, Request

from jobgate.api.dashboard import session
from jobgate.api.deps import Services, services
from jobgate.api.transport import TLS_EXTENSION, UNIX_EXTENSION
from jobgate.auth.identity import Caller
from jobgate.auth.jobtokens import PREFIX as JOB_TOKEN_PREFIX
from jobgate.auth.policy import Access
from jobgate.errors import Forbidden, Unauthorized
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
    request.state.caller = await request_caller(request, request.app.state.services)


async def request_caller(request: Request, svc: Services) -> Caller:
    """Who sent ``request``: the UNIX socket's owner, else the ``Authorization`` header's,
    else the dashboard session's, else the client certificate's (401 without any valid)."""
    extensions = request.scope.get("extensions") or {}
    unix = extensions.get(UNIX_EXTENSION)
    if unix is not None:
        # The socket file is its owner's alone: its requests are the owner's, whatever
        # credentials they carry.
        return svc.auth.socket_caller(unix.get("peer_uid"))
    header = request.headers.get("authorization")
    if header is None:
        # A dashboard page's request: the session cookie stands for the login's credential.
        caller = await session.cookie_caller(request, svc)
        if caller is not None:
            return caller
    if header is not None and header.startswith(f"Bearer {JOB_TOKEN_PREFIX}"):
        # A job's own token: no scope, good only for that job's heartbeat route.
        job_id = svc.job_tokens.verify(header.removeprefix("Bearer "))
        if job_id is None:
            raise Unauthorized("invalid job token")
        request.state.job_token = job_id
        return Caller(f"job:{job_id}", "job-token", frozenset())
    chain = (extensions.get(TLS_EXTENSION) or {}).get("client_cert_chain") or None
    caller = await svc.auth.authenticate(header, client_chain=chain)
    if caller.method == "x509":
        check_same_site(request)
    return caller


UNSAFE_SITES = frozenset({"cross-site", "same-site"})


def check_same_site(request: Request) -> None:
    """Refuse a changing request that a browser sent from another site on the strength of
    a client certificate alone: browsers present certificates, like cookies, to any page
    that makes them connect (``Origin`` and ``Sec-Fetch-Site`` say where a request comes
    from; command-line clients send neither)."""
    if request.method in session.SAFE_METHODS:
        return
    origin = request.headers.get("origin")
    own = request.headers.get("host", "")
    fetch_site = request.headers.get("sec-fetch-site", "")
    if (origin is not None and urlsplit(origin).netloc != own) or fetch_site in UNSAFE_SITES:
        raise Forbidden(
            "a request from another site may not act with this client certificate",
            errors=[{"where": "header.Origin", "what": f"this server's host ({own})"}],
        )


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
