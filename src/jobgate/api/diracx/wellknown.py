"""The documents DiracX's client reads before any call: ``/.well-known/openid-configuration``
(for its token endpoint; every client start) and ``/.well-known/dirac-metadata`` (the
virtual organizations, read by ``dirac login``), plus ``/api/auth/userinfo``
(``dirac whoami``).

jobgate issues no tokens: callers bring a jobgate service token (or an OIDC token of a
trusted issuer) in the client's credentials file. The discovery document says so; its
``token_endpoint`` is required by the client and refuses every grant. jobgate's own OIDC
(verifying tokens of external issuers) reads the issuers' documents, never this one.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from jobgate.api.security import current_caller, public

VO = "jobgate"
GROUP = "jobgate_user"


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def make_router() -> APIRouter:
    router = APIRouter(tags=["diracx"])

    @router.get("/.well-known/openid-configuration", include_in_schema=False)
    @public
    async def openid_configuration(request: Request) -> JSONResponse:
        base = _base(request)
        return JSONResponse(
            {
                "issuer": base,
                "token_endpoint": f"{base}/api/auth/token",
                "userinfo_endpoint": f"{base}/api/auth/userinfo",
                "grant_types_supported": [],
                "response_types_supported": [],
                "scopes_supported": [],
                "service_documentation": f"{base}/docs",
            }
        )

    @router.get("/.well-known/dirac-metadata", include_in_schema=False)
    @public
    async def dirac_metadata() -> JSONResponse:
        support = {"message": "Ask your jobgate operator.", "webpage": None, "email": None}
        vo: dict[str, Any] = {
            "groups": {GROUP: {"properties": ["NormalUser"]}},
            "support": support,
            "default_group": GROUP,
        }
        return JSONResponse({"virtual_organizations": {VO: vo}})

    @router.post("/api/auth/token", include_in_schema=False)
    @public
    async def token() -> JSONResponse:
        message = (
            "jobgate issues no tokens: put a jobgate service token (jobgate token create) "
            "in the DiracX credentials file"
        )
        return JSONResponse(
            {
                "code": "unsupported_grant_type",
                "status": 400,
                "message": message,
                "detail": message,
            },
            status_code=400,
        )

    @router.get("/api/auth/userinfo", summary="DiracX: who the caller is")
    async def userinfo(request: Request) -> JSONResponse:
        caller = current_caller(request)
        properties = ["NormalUser"] + (["JobAdministrator"] if caller.admin else [])
        name = caller.name or "anonymous"
        return JSONResponse(
            {
                "sub": name,
                "vo": VO,
                "dirac_group": GROUP,
                "policies": {},
                "properties": properties,
                "preferred_username": name,
            }
        )

    return router
