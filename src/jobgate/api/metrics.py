"""``/metrics`` (Prometheus text format) and the middleware that times HTTP requests.

Who may scrape is ``JOBGATE_METRICS_ACCESS``: ``loopback`` (default) serves clients that
connect from a loopback address without credentials and asks others for credentials;
``token`` asks everyone; ``open`` serves everyone. Credentials are the bearer token of
``JOBGATE_METRICS_TOKEN`` (for a scraper) or those of any admin caller.
"""

from __future__ import annotations

import hmac
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobgate.api.deps import Services, services
from jobgate.api.security import public, request_caller
from jobgate.errors import Forbidden
from jobgate.observability import tracing
from jobgate.observability.metrics import HTTP_LATENCY, HTTP_REQUESTS

LOOPBACK_PEERS = ("127.", "::1", "::ffff:127.")


def _from_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    return host.startswith(LOOPBACK_PEERS) or host == "localhost"


async def check_scraper(request: Request, svc: Services) -> None:
    """Raise 401/403 unless the access rule lets this request read the metrics."""
    rule = svc.settings.metrics_access
    if rule == "open" or (rule == "loopback" and _from_loopback(request)):
        return
    header = request.headers.get("authorization") or ""
    token = svc.settings.metrics_token
    sent = header[7:].strip().encode() if header[:7].lower() == "bearer " else b""
    secret = token.get_secret_value().encode() if token is not None else b""
    if secret and hmac.compare_digest(sent, secret):
        return
    caller = await request_caller(request, svc)
    if not caller.admin:
        raise Forbidden(
            "the metrics are for admins and the JOBGATE_METRICS_TOKEN bearer "
            f"(JOBGATE_METRICS_ACCESS={rule})"
        )


def make_router() -> APIRouter:
    # Not an API operation (its access rule is not the API's): kept out of the OpenAPI document.
    router = APIRouter(include_in_schema=False)

    @router.get("/metrics", response_class=Response)
    @public
    async def metrics(request: Request, svc: Annotated[Services, Depends(services)]) -> Response:
        """The service's metrics in the Prometheus text format (who may read them:
        ``JOBGATE_METRICS_ACCESS``)."""
        await check_scraper(request, svc)
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return router


class HttpMetrics:
    """ASGI middleware: counts and times each HTTP request by method, route template (the
    path pattern, never the path itself: bounded label values) and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        with tracing.span(f"HTTP {method}", **{"http.request.method": method}) as span:
            try:
                await self.app(scope, receive, sending)
            finally:
                route = route_template(scope)
                HTTP_REQUESTS.labels(method, route, str(status)).inc()
                HTTP_LATENCY.labels(method, route).observe(time.perf_counter() - started)
                if span is not None:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", status)


def route_template(scope: Scope) -> str:
    """The matched route's path with its parameters as ``{name}``, from the path and the
    path parameters the router set (``unmatched`` when no route matched). A value is
    replaced from the right; one equal to a literal segment may take that segment's place,
    so label values stay within the routes' own segments and parameter names."""
    if "endpoint" not in scope:
        return "unmatched"
    path: str = scope.get("path", "")
    params: dict[str, object] = scope.get("path_params") or {}
    for name, raw in sorted(params.items(), key=lambda kv: -len(str(kv[1]))):
        value = str(raw)
        if not value:
            continue
        head, found, tail = path.rpartition("/" + value)
        if found and (not tail or tail.startswith(("/", ":"))):
            path = f"{head}/{{{name}}}{tail}"
    return path


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
