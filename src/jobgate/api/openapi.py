"""The OpenAPI document: what each operation takes and every answer it really gives.

- Security schemes per configured mode, so ``/docs`` offers "Authorize".
- Error answers carry the one error body (component ``Error``). Validation errors are
  answered 400, so FastAPI's generated 422 is replaced by a 400; every operation with
  a query or header parameter or a body lists 400, every authenticated one 401, every
  one with a path parameter 404. Routes declare the others (400 on a path alone, 403, 409, 413, 422,
  429) with
  :func:`jobgate.api.errors.answers`.
- Routes that parse their body by hand (JSON or YAML) declare it with :func:`body`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from jobgate.api.errors import ERROR_ANSWERS, ERROR_HEADERS, Error
from jobgate.api.security import is_public
from jobgate.config import Settings

REF = "#/components/schemas/{model}"
BODY_TYPES = ("application/json", "application/yaml")
"""Media types declared for hand-parsed bodies (the server also takes the other YAML
spellings: application/x-yaml, text/yaml, text/x-yaml)."""

_published: dict[str, type[BaseModel]] = {}
"""Models referenced by :func:`ref`, added to the document's components."""


def ref(model: type[BaseModel]) -> dict[str, str]:
    """A ``$ref`` to ``model``'s schema, which the document will carry."""
    _published[model.__name__] = model
    return {"$ref": REF.format(model=model.__name__)}


def body(schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    """``openapi_extra`` of a route whose handler reads a JSON or YAML body itself."""
    content = {t: {"schema": schema} for t in BODY_TYPES}
    return {"requestBody": {"required": True, "description": description, "content": content}}


def raw_body(media_type: str, description: str) -> dict[str, Any]:
    """``openapi_extra`` of a route that streams its body (uploads)."""
    schema = {"type": "string", "format": "binary"}
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {media_type: {"schema": schema}},
        }
    }


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
    if "x509" in settings.auth:
        schemes["clientCertificate"] = {
            "type": "mutualTLS",
            "description": "a client certificate, or an RFC 3820 proxy of one, from a CA "
            "the server trusts",
        }
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


def error_answer(status: int) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": ERROR_ANSWERS[status],
        "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}},
    }
    header = ERROR_HEADERS.get(status)
    if header:
        answer["headers"] = {header: {"schema": {"type": "string"}}}
    return answer


def add_components(doc: dict[str, Any], models: list[type[BaseModel]]) -> None:
    """Add the schemas of ``models`` (and what they use) to the document's components."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    _, top = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    for name, schema in top.get("$defs", {}).items():
        if name not in schemas:
            schemas[name] = schema
        elif _shape(schemas[name]) != _shape(schema):
            # Two different models under one name would make every $ref to it ambiguous.
            raise ValueError(f"OpenAPI component {name!r} is defined twice, differently")


def _shape(schema: Any) -> Any:
    """``schema`` without defaults, which FastAPI leaves out of response schemas."""
    if isinstance(schema, dict):
        return {k: _shape(v) for k, v in schema.items() if k != "default"}
    if isinstance(schema, list):
        return [_shape(v) for v in schema]
    return schema


def complete_answers(op: dict[str, Any], secured: bool) -> None:
    """400 for validation (not FastAPI's 422), 413 on bodies, 401 when authenticated, 404 on
    path ids."""
    answers: dict[str, Any] = op.setdefault("responses", {})
    generated = answers.get("422", {}).get("content", {}).get("application/json", {})
    if "HTTPValidationError" in str(generated.get("schema", {})):
        del answers["422"]
    params = op.get("parameters", [])
    if "requestBody" in op or any(p.get("in") != "path" for p in params):
        answers.setdefault("400", error_answer(400))
    if "requestBody" in op:  # every body is read under a size limit
        answers.setdefault("413", error_answer(413))
    if secured:
        answers.setdefault("401", error_answer(401))
    if any(p.get("in") == "path" for p in params):
        answers.setdefault("404", error_answer(404))
    op["responses"] = dict(sorted(answers.items()))


def build(app: FastAPI, settings: Settings) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    add_components(doc, [Error, *_published.values()])
    schemas = doc["components"]["schemas"]
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemes = security_schemes(settings)
    if schemes:
        doc["components"]["securitySchemes"] = schemes
    anyone: list[dict[str, list[str]]] = [{name: []} for name in schemes]
    public = public_operations(app)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            secured = bool(schemes) and (path, method) not in public
            if schemes:
                op["security"] = anyone if secured else []
            complete_answers(op, secured)
    return doc


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the document :func:`build` makes (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
