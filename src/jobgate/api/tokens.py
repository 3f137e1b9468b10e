"""Service tokens (admins only) and ``/api/v1/me`` (who the caller is)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, field_validator

from jobgate.api import openapi
from jobgate.api.bodies import body_of
from jobgate.api.deps import Services, services
from jobgate.api.errors import answers
from jobgate.api.security import Acc
from jobgate.auth.identity import Scope
from jobgate.auth.namespaces import BOOTSTRAP_ADMIN, token_owner
from jobgate.domain import limits as lim
from jobgate.domain.models import now
from jobgate.errors import InvalidRequest, JobgateError

Svc = Annotated[Services, Depends(services)]


class TokenNotFound(JobgateError):
    status = 404
    code = "not_found"


class NewToken(BaseModel):
    owner: str | None = Field(default=None, min_length=1, max_length=255)
    """The owner the token acts as: a full name (``iam:alice``, ``basic:carol``) as written,
    a bare name a robot ``token:<name>``; default: the admin creating it."""
    name: str | None = Field(default=None, max_length=200)
    scopes: list[Scope] = Field(
        default_factory=lambda: [Scope.SUBMIT], min_length=1, max_length=len(Scope)
    )
    groups: list[lim.TagKey] = Field(default_factory=list, max_length=lim.GROUPS)
    expires_in: lim.Int | None = Field(default=None, gt=0, le=100 * 366 * 86400)
    """Seconds until the token expires (at most about 100 years); null: never."""

    @field_validator("groups")
    @classmethod
    def _groups(cls, value: list[str]) -> list[str]:
        if any(not g.strip("/ ") or "," in g for g in value):
            raise ValueError("group names must be non-empty and contain no ','")
        return value


TokenBody = Annotated[NewToken, Depends(body_of(NewToken))]


def make_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["access"])

    @router.get("/me", summary="Who the caller is: name, groups, scopes")
    async def me(acc: Acc) -> JSONResponse:
        return JSONResponse(acc.caller.to_json())

    @router.post(
        "/tokens",
        status_code=201,
        summary="Create a service token (admins)",
        responses=answers(403),
        openapi_extra=openapi.body(openapi.ref(NewToken)),
    )
    async def create_token(body: TokenBody, acc: Acc, svc: Svc) -> JSONResponse:
        acc.require(Scope.ADMIN)
        expires = now() + timedelta(seconds=body.expires_in) if body.expires_in else None
        owner = acc.caller.name or BOOTSTRAP_ADMIN
        if body.owner is not None:
            try:
                owner = token_owner(body.owner, acc.policy.oidc_namespaces)
            except ValueError as exc:
                raise InvalidRequest(
                    str(exc), errors=[{"where": "body.owner", "what": str(exc)}]
                ) from None
        row, secret = await svc.tokens.create(
            owner=owner,
            scopes=set(body.scopes),
            name=body.name,
            groups=tuple(body.groups),
            expires_at=expires,
            created_by=acc.caller.name,
        )
        # The only time the secret is shown: the server keeps its hash alone.
        out: dict[str, Any] = {**row.to_json(), "token": secret}
        return JSONResponse(out, status_code=201)

    @router.get(
        "/tokens", summary="Service tokens (admins); never their secrets", responses=answers(403)
    )
    async def list_tokens(
        acc: Acc,
        svc: Svc,
        include_inactive: Annotated[
            bool, Query(alias="all", description="include expired and revoked tokens")
        ] = False,
    ) -> JSONResponse:
        acc.require(Scope.ADMIN)
        rows = await svc.tokens.store.list(include_inactive=include_inactive)
        return JSONResponse({"tokens": [r.to_json() for r in rows]})

    @router.delete(
        "/tokens/{token_id}", summary="Revoke a service token (admins)", responses=answers(403)
    )
    async def revoke_token(token_id: str, acc: Acc, svc: Svc) -> Response:
        acc.require(Scope.ADMIN)
        row = await svc.tokens.store.revoke(token_id)
        if row is None:
            raise TokenNotFound(f"no token with id {token_id!r}")
        return JSONResponse(row.to_json())

    return router
