"""The OpenAPI document states how to authenticate, so ``/docs`` offers "Authorize"."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from jobgate.api.security import is_public
from jobgate.config import Settings


def security_schemes(settings: Settings) -> dict[str, dict[str, Any]]:
    """One scheme per configured mode that takes a credential."""
    schemes: dict[str, dict[str, Any]] = {}
    if "token" in settings.auth or "oidc" in settings.auth:
        kinds = {"token": "a service token (jgt_…)", "oidc": "an OIDC access token (JWT)"}
        schemes["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": " or ".join(v for k, v in kinds.items() if k in settings.auth),
        }
    if "basic" in settings.auth:
        schemes["basic"] = {"type": "http", "scheme": "basic"}
    return schemes


def public_operations(app: FastAPI) -> set[tuple[str, str]]:
    """(path, method) of the routes marked @public."""
    routes: list[Any] = list(app.routes)
    try:  # FastAPI >= 0.16x keeps included routers lazily; this walks into them
        from fastapi.routing import iter_route_contexts

        routes = list(iter_route_contexts(app.routes))
    except ImportError:  # pragma: no cover - older FastAPI: a flat list
        pass
    return {
        (r.path, m.lower())
        for r in routes
        if is_public(getattr(r, "endpoint", None))
        for m in getattr(r, "methods", None) or ()
    }


def install(app: FastAPI, settings: Settings) -> None:
    """Add the schemes and a requirement on every operation that is not public."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schemes = security_schemes(settings)
        if schemes:
            doc.setdefault("components", {})["securitySchemes"] = schemes
            anyone: list[dict[str, list[str]]] = [{name: []} for name in schemes]
            public = public_operations(app)
            for path, item in doc["paths"].items():
                for method, op in item.items():
                    op["security"] = [] if (path, method) in public else anyone
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
