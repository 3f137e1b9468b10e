"""Operator-style API docs at ``/v1/www/docs/oper`` (the SRCNet API's path), beside ``/docs``.

The page is RapiDoc over this server's ``/openapi.json``; its script is vendored in
``api/assets`` and served from here, its web fonts are off, and the page's Content Security
Policy lets it load and call nothing but this server: it works without Internet access.
"""

from __future__ import annotations

import functools
import gzip
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from jobgate.api.security import public

PATH = "/v1/www/docs/oper"
SCRIPT = "rapidoc-min.js"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - operator docs</title>
<script type="module" src="{base}/{script}"></script>
</head>
<body>
<rapi-doc spec-url="{spec}" load-fonts="false" render-style="focused" theme="light"
  show-header="false" allow-server-selection="false" allow-spec-url-load="false"
  allow-spec-file-load="false" schema-description-expanded="true"
  regular-font="system-ui, sans-serif" mono-font="ui-monospace, monospace"></rapi-doc>
</body>
</html>
"""


@functools.cache
def _script() -> tuple[bytes, bytes]:
    """The script, plain and gzipped (compressed once, on first request)."""
    data = resources.files("jobgate.api").joinpath("assets", SCRIPT).read_bytes()
    return data, gzip.compress(data, 6)


def make_router(title: str) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get(PATH)
    @public
    async def oper_docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = _PAGE.format(
            title=title, base=root + PATH, script=SCRIPT, spec=root + request.app.openapi_url
        )
        return HTMLResponse(page, headers={"Content-Security-Policy": CSP})

    @router.get(f"{PATH}/{SCRIPT}")
    @public
    async def oper_docs_script(request: Request) -> Response:
        plain, packed = _script()
        headers = {"Cache-Control": "public, max-age=86400", "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(
                packed,
                media_type="text/javascript",
                headers={**headers, "Content-Encoding": "gzip"},
            )
        return Response(plain, media_type="text/javascript", headers=headers)

    return router
