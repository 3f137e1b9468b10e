"""One mapping from errors to JSON responses: ``{code, status, message, errors[where, what]}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from jobgate.errors import JobgateError


class ErrorItem(BaseModel):
    """One problem of a request."""

    where: str
    """Where: ``body.executors[0].image``, ``query.view``, ``header.Authorization``…"""
    what: str


class Error(BaseModel):
    """The body of every error answer."""

    code: str
    """Machine-readable: ``invalid_request``, ``unauthorized``, ``not_found``, ``conflict``…"""
    status: int
    message: str
    errors: list[ErrorItem] | None = None
    """Each problem, when there is more to say than ``message`` (absent otherwise)."""


ERROR_ANSWERS: dict[int, str] = {
    400: "Invalid request: a parameter or the body is malformed; `errors` says where",
    401: "No valid credentials; `WWW-Authenticate` says which schemes are accepted",
    403: "The credential lacks the scope or group this needs",
    404: "No such resource (another caller's job answers the same)",
    409: "The resource is not in a state that allows this",
    413: "The body is larger than the server's limit",
    422: "This Idempotency-Key was used with a different request",
    429: "Too many submissions; `Retry-After` says when to try again",
}


ERROR_HEADERS: dict[int, str] = {401: "WWW-Authenticate", 429: "Retry-After"}


def answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries of a route for the error answers it gives, with their body."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        out[status] = {"model": Error, "description": ERROR_ANSWERS[status]}
        if status in ERROR_HEADERS:
            out[status]["headers"] = {ERROR_HEADERS[status]: {"schema": {"type": "string"}}}
    return out


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    items = []
    for err in exc.errors():
        loc = tuple(p for p in err.get("loc", ()) if p not in ("function-after", "model-after"))
        # Pydantic adds the model class name for model-level validators; it only adds noise.
        loc = tuple(p for p in loc if not (isinstance(p, str) and p[:1].isupper()))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        items.append({"where": _where(loc), "what": msg})
    return items


def install(app: FastAPI) -> None:
    @app.exception_handler(JobgateError)
    async def _jobgate(_request: Request, exc: JobgateError) -> JSONResponse:
        return JSONResponse(exc.to_json(), status_code=exc.status, headers=exc.headers or None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        summary = "; ".join(f"{e['where']}: {e['what']}" for e in errors[:5])
        body = {"code": "invalid_request", "status": 400, "message": summary, "errors": errors}
        return JSONResponse(body, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        body = {"code": code, "status": exc.status_code, "message": str(exc.detail)}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
