"""People sign in to the dashboard at the OIDC provider: the authorization code flow with PKCE.

``GET /ui/oidc/login`` sends the browser to the provider's authorization endpoint with a
fresh ``state``, ``nonce`` and S256 code challenge, kept (sealed, httpOnly, ten minutes) in
a cookie of their own; ``GET /ui/oidc/callback`` checks the state, redeems the code with
the verifier at the token endpoint and authenticates the access token exactly as an API
call would (issuer, audience, groups): only then is a session cookie made. The provider is
the operator's (``JOBGATE_DASHBOARD_OIDC_ISSUER`` or the first trusted issuer), so these
requests do not pass the staging guard, as OIDC discovery does not.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import secrets
import time
from typing import Annotated, Any
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from jobgate.api.dashboard import session
from jobgate.api.deps import Services, services
from jobgate.api.security import public
from jobgate.auth.oidc import OidcError
from jobgate.errors import Unauthorized

FLOW_COOKIE = "jobgate_oidc"
FLOW_SECONDS = 600
CALLBACK = "/ui/oidc/callback"
NOT_CONFIGURED = "OIDC sign-in is not configured here (JOBGATE_DASHBOARD_OIDC_CLIENT_ID)"
Svc = Annotated[Services, Depends(services)]


def provider_url(svc: Services) -> str | None:
    """The issuer people sign in at; None when OIDC sign-in is not configured."""
    s = svc.settings
    if not s.dashboard_oidc_client_id or "oidc" not in s.auth:
        return None
    if s.dashboard_oidc_issuer:
        return s.dashboard_oidc_issuer.rstrip("/")
    first = s.oidc_issuers[0] if s.oidc_issuers else ""
    return first.partition("=")[2].rstrip("/") if "=" in first else first.rstrip("/") or None


def challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


async def endpoints(http: httpx.AsyncClient, issuer: str) -> tuple[str, str]:
    """The provider's authorization and token endpoints, from its discovery document."""
    try:
        r = await http.get(issuer + "/.well-known/openid-configuration")
        r.raise_for_status()
        doc = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise OidcError(f"the OIDC provider's discovery document: {exc}") from None
    auth, token = doc.get("authorization_endpoint"), doc.get("token_endpoint")
    if not isinstance(auth, str) or not isinstance(token, str):
        raise OidcError("the OIDC provider names no authorization or token endpoint")
    return auth, token


def redirect_uri(request: Request) -> str:
    return str(request.base_url).rstrip("/") + CALLBACK


ERROR_CODES = {400: "invalid_request", 401: "unauthorized", 404: "not_found", 502: "bad_gateway"}


def page(request: Request, title: str, message: str, status: int) -> Response:
    """A small page a browser shows (an error, or the step back to the dashboard); an error
    for a client that does not ask for HTML is the API's JSON error."""
    if status != 200 and "text/html" not in request.headers.get("accept", ""):
        code = ERROR_CODES.get(status, "error")
        body_json = {"code": code, "status": status, "message": message, "errors": []}
        return JSONResponse(body_json, status_code=status)
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        '<link rel="stylesheet" href="/ui/static/app.css">'
        '<link rel="icon" href="/ui/static/favicon.svg" type="image/svg+xml">'
        + ('<meta http-equiv="refresh" content="0;url=/">' if status == 200 else "")
        + f'</head><body><main><div class="card login"><h1>{html.escape(title)}</h1>'
        f'<p>{html.escape(message)}</p><p><a href="/">Back to the dashboard</a></p>'
        "</div></main></body></html>"
    )
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    return HTMLResponse(body, status_code=status, headers=headers)


def make_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/ui/oidc/login")
    @public
    async def start(request: Request, svc: Svc) -> Response:
        issuer = provider_url(svc)
        if issuer is None:
            return page(request, "Sign-in unavailable", NOT_CONFIGURED, 404)
        async with httpx.AsyncClient(timeout=svc.settings.http_timeout) as http:
            try:
                authorize, _token = await endpoints(http, issuer)
            except OidcError as exc:
                return page(request, "Sign-in failed", str(exc), 502)
        state, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        query = {
            "response_type": "code",
            "client_id": svc.settings.dashboard_oidc_client_id,
            "redirect_uri": redirect_uri(request),
            "scope": svc.settings.dashboard_oidc_scopes,
            "state": state,
            "nonce": secrets.token_urlsafe(24),
            "code_challenge": challenge(verifier),
            "code_challenge_method": "S256",
        }
        sep = "&" if "?" in authorize else "?"
        response = RedirectResponse(authorize + sep + urlencode(query), status_code=302)
        flow = {"s": state, "v": verifier, "e": time.time() + FLOW_SECONDS}
        response.set_cookie(
            FLOW_COOKIE,
            svc.secrets.encrypt(json.dumps(flow)),
            max_age=FLOW_SECONDS,
            path="/ui/oidc",
            httponly=True,
            # Lax: the provider's redirect back is a top-level navigation from its site.
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return response

    @router.get(CALLBACK)
    @public
    async def callback(
        request: Request,
        svc: Svc,
        code: Annotated[str | None, Query(max_length=4096)] = None,
        state: Annotated[str | None, Query(max_length=512)] = None,
        error: Annotated[str | None, Query(max_length=512)] = None,
    ) -> Response:
        issuer = provider_url(svc)
        if issuer is None:
            return page(request, "Sign-in unavailable", NOT_CONFIGURED, 404)
        flow = _flow(svc, request.cookies.get(FLOW_COOKIE))
        if error is not None:
            return _done(page(request, "Sign-in failed", f"the provider answered: {error}", 401))
        if flow is None or not state or not code:
            return _done(page(request, "Sign-in failed", "the sign-in expired; start again", 400))
        if not hmac.compare_digest(state.encode(), str(flow["s"]).encode()):
            return _done(page(request, "Sign-in failed", "the sign-in's state does not match", 400))
        try:
            access = await _redeem(svc, issuer, code, str(flow["v"]), redirect_uri(request))
            await svc.auth.authenticate("Bearer " + access)
        except (OidcError, Unauthorized) as exc:
            return _done(page(request, "Sign-in failed", str(exc), 401))
        new = session.new_session("Bearer " + access)
        response = _done(page(request, "Signed in", "Signed in; opening the dashboard.", 200))
        session.set_cookie(request, response, svc, new)
        return response

    return router


def _flow(svc: Services, value: str | None) -> dict[str, Any] | None:
    plain = None if value is None else svc.secrets.decrypt(value)
    if plain is None:
        return None
    try:
        flow = json.loads(plain)
    except ValueError:
        return None
    if not isinstance(flow, dict) or float(flow.get("e", 0)) < time.time():
        return None
    return flow


def _done(response: Response) -> Response:
    response.delete_cookie(FLOW_COOKIE, path="/ui/oidc", httponly=True, samesite="lax")
    return response


async def _redeem(svc: Services, issuer: str, code: str, verifier: str, redirect: str) -> str:
    """The access token for ``code``, from the provider's token endpoint."""
    s = svc.settings
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect,
        "client_id": s.dashboard_oidc_client_id or "",
        "code_verifier": verifier,
    }
    if s.dashboard_oidc_client_secret is not None:
        form["client_secret"] = s.dashboard_oidc_client_secret.get_secret_value()
    async with httpx.AsyncClient(timeout=s.http_timeout) as http:
        _authorize, token_url = await endpoints(http, issuer)
        try:
            r = await http.post(token_url, data=form, headers={"Accept": "application/json"})
            body = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise OidcError(f"the OIDC provider's token endpoint: {exc}") from None
    if r.status_code != 200 or not isinstance(body, dict):
        what = body.get("error") if isinstance(body, dict) else None
        raise OidcError(f"the provider refused the code ({what or r.status_code})")
    access = body.get("access_token")
    if not isinstance(access, str) or not access:
        raise OidcError("the provider's answer holds no access token")
    return access
