"""Dashboard sessions: a browser logs in once and is then known by an httpOnly cookie.

The cookie holds, sealed with the service's secret key (Fernet: encrypted and
authenticated), the ``Authorization`` value the person gave at login, a CSRF token and an
expiry. Every request that carries the cookie (and no ``Authorization`` header) is
authenticated from that value by the same :class:`Authenticator` as an API call, so a
revoked service token or a removed user stops working at once, and the policy sees the
same caller. Scripts in the page cannot read the cookie; requests that change anything
(every method but GET/HEAD/OPTIONS) must also send the CSRF token in ``X-CSRF-Token``,
which the page gets from ``GET /ui/session``; the cookie is ``SameSite=Strict`` besides.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response

from jobgate.api.deps import Services
from jobgate.auth.identity import Caller
from jobgate.errors import Forbidden, Unauthorized

COOKIE = "jobgate_session"
CSRF_HEADER = "X-CSRF-Token"
LIFETIME = 8 * 3600
"""Seconds a session lasts from login (the credential's own expiry applies too)."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Session:
    authorization: str
    csrf: str
    expires: float


def seal(svc: Services, session: Session) -> str:
    payload = {"a": session.authorization, "x": session.csrf, "e": session.expires}
    return svc.secrets.encrypt(json.dumps(payload, separators=(",", ":")))


def unseal(svc: Services, value: str) -> Session | None:
    """The session in a cookie value; None when forged, from another key, or expired."""
    plain = svc.secrets.decrypt(value)
    if plain is None:
        return None
    try:
        data = json.loads(plain)
        session = Session(str(data["a"]), str(data["x"]), float(data["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    return session if session.expires > time.time() else None


def basic_authorization(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def new_session(authorization: str) -> Session:
    return Session(authorization, secrets.token_urlsafe(32), time.time() + LIFETIME)


def set_cookie(request: Request, response: Response, svc: Services, session: Session) -> None:
    response.set_cookie(
        COOKIE,
        seal(svc, session),
        max_age=int(session.expires - time.time()),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")


def session_of(request: Request, svc: Services) -> Session | None:
    value = request.cookies.get(COOKIE)
    return None if value is None else unseal(svc, value)


async def cookie_caller(request: Request, svc: Services) -> Caller | None:
    """The caller of a request authenticated by its session cookie.

    None when the request has no cookie, or an unusable one while unauthenticated access
    is on (it is then served as without a cookie). Raises 401 for an expired or forged
    session, 403 for a changing request without the session's CSRF token.
    """
    if COOKIE not in request.cookies:
        return None
    session = session_of(request, svc)
    if session is None:
        if svc.auth.open:
            return None
        raise Unauthorized(
            "the dashboard session has expired; log in again",
            errors=[{"where": f"cookie.{COOKIE}", "what": "expired or not from this server"}],
        )
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
            raise Forbidden(
                "missing or wrong CSRF token",
                errors=[{"where": f"header.{CSRF_HEADER}", "what": "the session's CSRF token"}],
            )
    return await svc.auth.authenticate(session.authorization)
