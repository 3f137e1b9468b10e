"""One mapping from errors to JSON responses: ``{code, status, message, errors[where, what]}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from jobgate.errors import JobgateError


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
