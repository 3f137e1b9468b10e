"""The dashboard's routes: the page and its files, login/logout, and the overview data.

The page is plain HTML, CSS and JavaScript shipped in this package (``static/``): nothing
is built at run time and nothing is loaded from elsewhere (the Content-Security-Policy
allows this origin only). Everything the page shows comes from the native API, called
with the session cookie, so the API's policy decides what a person sees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from jobgate.api.bodies import parse_body, validate
from jobgate.api.dashboard import session, signin
from jobgate.api.deps import Services, services
from jobgate.api.security import Acc, public
from jobgate.auth.identity import Caller, Scope
from jobgate.errors import Forbidden, InvalidRequest, Unauthorized
from jobgate.service.overview import Window, overview

STATIC = Path(__file__).with_name("static")
FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
Svc = Annotated[Services, Depends(services)]


class Login(BaseModel):
    """A service token, or a basic user's name and password."""

    token: str | None = Field(default=None, max_length=4096)
    user: str | None = Field(default=None, max_length=256)
    password: str | None = Field(default=None, max_length=4096)


def login_authorization(body: Login) -> str:
    if body.token:
        return "Bearer " + body.token.strip()
    if body.user and body.password is not None:
        return session.basic_authorization(body.user, body.password)
    what = "a token, or a user and password"
    raise InvalidRequest("nothing to log in with", errors=[{"where": "body", "what": what}])


def check_origin(request: Request) -> None:
    """Refuse a login posted from another site (a forged login into someone else's
    account): browsers send ``Origin`` with every POST."""
    origin = request.headers.get("origin")
    # Host, not scheme: behind a TLS proxy the page is https and this server sees http.
    own = request.headers.get("host", "")
    if origin is not None and urlsplit(origin).netloc != own:
        what = f"this page's host ({own})"
        raise Forbidden(
            "a login must come from the dashboard itself",
            errors=[{"where": "header.Origin", "what": what}],
        )


def session_view(svc: Services, caller: Caller | None, csrf: str | None) -> dict[str, Any]:
    modes = svc.settings.auth
    return {
        "authenticated": caller is not None,
        "caller": None if caller is None else caller.to_json(),
        "csrf": csrf,
        "login": {
            "token": "token" in modes,
            "basic": "basic" in modes and svc.settings.basic_users_file is not None,
            "oidc": signin.provider_url(svc) is not None,
        },
    }


def make_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)
    router.include_router(signin.make_router())

    @router.get("/")
    @public
    async def index() -> FileResponse:
        return FileResponse(
            STATIC / "index.html", media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS
        )

    @router.get("/ui/static/{name}")
    @public
    async def static(name: str) -> Response:
        if name not in FILES:
            what = f"no dashboard file {name!r}"
            body = {"code": "not_found", "status": 404, "message": what, "errors": []}
            return JSONResponse(body, status_code=404)
        return FileResponse(STATIC / name, media_type=FILES[name], headers=SECURITY_HEADERS)

    @router.get("/ui/session")
    @public
    async def who(request: Request, svc: Svc) -> JSONResponse:
        """The person this browser is logged in as (never a 401: the page then shows the
        login form, and no browser dialog pops up)."""
        current = session.session_of(request, svc)
        caller: Caller | None = None
        csrf = None
        if current is not None:
            try:
                caller = await svc.auth.authenticate(current.authorization)
                csrf = current.csrf
            except Unauthorized:
                caller = None
        if caller is None and svc.auth.open:
            caller = await svc.auth.authenticate(None)
        return JSONResponse(session_view(svc, caller, csrf))

    @router.post("/ui/login")
    @public
    async def login(request: Request, svc: Svc) -> JSONResponse:
        check_origin(request)
        body = validate(Login, await parse_body(request))
        authorization = login_authorization(body)
        try:
            caller = await svc.auth.authenticate(authorization)
        except Unauthorized as exc:
            # Without the WWW-Authenticate challenge: a browser would pop up its own dialog.
            raise Unauthorized(exc.message, errors=exc.errors) from None
        if caller.name is None:  # the anonymous caller of JOBGATE_AUTH=none: nothing to keep
            return JSONResponse(session_view(svc, caller, None))
        new = session.new_session(authorization)
        response = JSONResponse(session_view(svc, caller, new.csrf))
        session.set_cookie(request, response, svc, new)
        return response

    @router.post("/ui/logout")
    @public
    async def logout(request: Request, svc: Svc) -> Response:
        current = session.session_of(request, svc)
        if current is not None:
            await session.cookie_caller(request, svc)  # the CSRF check: no forced logout
        response = Response(status_code=204)
        session.clear_cookie(response)
        return response

    @router.get("/ui/overview")
    async def overview_data(
        svc: Svc, acc: Acc, minutes: Annotated[int, Query(ge=5, le=1440)] = 60
    ) -> JSONResponse:
        acc.require(Scope.READ)
        doc = await overview(
            svc.jobs.store.db, acc.visibility(), list(svc.backends), Window(minutes)
        )
        return JSONResponse(doc)

    return router
