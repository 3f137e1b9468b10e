"""Files under ``/api/v1``: uploads into held jobs, sandboxes, output sandboxes.

- ``PUT /jobs/{id}/files/{path}`` (job held: 409 otherwise) stores the body as the file
  the job will see at ``/{path}``; ``GET /jobs/{id}/files`` lists them.
- ``POST /sandboxes`` stores a file or tarball under its sha256 (201 new, 200 when the
  same content was already there); ``GET``/``HEAD /sandboxes/{sha256}``; jobs use it as an
  input with url ``sandbox:<sha256>`` (a tarball is extracted into the input's path; one
  that would be refused there is a 400 naming the member, and is not stored).
- ``GET /jobs/{id}/output-sandbox``: the tar.gz of the job's ``output_sandbox`` paths.

Bodies are streamed to disk; beyond the size limit the answer is a 413.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from jobgate.api import openapi
from jobgate.api.deps import Services, services
from jobgate.api.errors import answers
from jobgate.api.security import Acc
from jobgate.auth.identity import Scope

Svc = Annotated[Services, Depends(services)]
BINARY = {"type": "string", "format": "binary"}


def declared_length(request: Request) -> int | None:
    """The request's Content-Length, if it sent a valid one."""
    value = request.headers.get("content-length")
    return int(value) if value is not None and value.isdigit() else None


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def make_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["files"])

    @router.put(
        "/jobs/{job_id}/files/{path:path}",
        summary="Upload a file into a held job (it appears at /{path})",
        status_code=201,
        responses={
            200: {"description": "Replaced a file uploaded before"},
            **answers(400, 403, 409, 413),
        },
        openapi_extra=openapi.raw_body("application/octet-stream", "The file's content"),
    )
    async def put_file(
        job_id: str, path: str, request: Request, svc: Svc, acc: Acc
    ) -> JSONResponse:
        await acc.control(job_id)
        info, replaced = await svc.uploads.put(
            job_id, path, request.stream(), declared_size=declared_length(request)
        )
        return _json(info, 200 if replaced else 201)

    @router.get("/jobs/{job_id}/files", summary="Files uploaded into a job")
    async def list_files(job_id: str, svc: Svc, acc: Acc) -> JSONResponse:
        await acc.job(job_id)
        return _json({"files": await svc.uploads.list(job_id)})

    @router.post(
        "/sandboxes",
        summary="Upload a sandbox (file or tarball)",
        status_code=201,
        responses={
            200: {"description": "The same content was already there"},
            **answers(403, 413),
        },
        openapi_extra=openapi.raw_body(
            "application/octet-stream", "A file, or a tar (optionally gzip-compressed)"
        ),
    )
    async def upload_sandbox(request: Request, svc: Svc, acc: Acc) -> JSONResponse:
        acc.require(Scope.SUBMIT)
        info = await svc.sandboxes.upload(
            request.stream(), owner=acc.owner, declared_size=declared_length(request)
        )
        location = {"Location": f"/api/v1/sandboxes/{info.sha256}"}
        return _json(info.to_json(), 200 if info.existed else 201, location)

    @router.get(
        "/sandboxes/{sha256}",
        summary="Download a sandbox",
        response_class=FileResponse,
        responses={200: {"content": {"application/octet-stream": {"schema": BINARY}}}},
    )
    async def get_sandbox(sha256: str, svc: Svc) -> FileResponse:
        await svc.sandboxes.find(sha256)
        return FileResponse(
            svc.sandboxes.path(sha256),
            media_type="application/octet-stream",
            headers={"ETag": f'"{sha256}"'},
        )

    @router.head("/sandboxes/{sha256}", summary="Whether a sandbox exists (and its size)")
    async def head_sandbox(sha256: str, svc: Svc) -> Response:
        row = await svc.sandboxes.find(sha256)
        return Response(
            status_code=200, headers={"Content-Length": str(row.size), "ETag": f'"{sha256}"'}
        )

    @router.get(
        "/jobs/{job_id}/output-sandbox",
        summary="Download a job's output sandbox (tar.gz)",
        response_class=FileResponse,
        responses={200: {"content": {"application/gzip": {"schema": BINARY}}}},
    )
    async def output_sandbox(job_id: str, svc: Svc, acc: Acc) -> FileResponse:
        await acc.job(job_id)
        row = await svc.sandboxes.output_of(job_id)
        return FileResponse(
            svc.sandboxes.path(row.sha256),
            media_type="application/gzip",
            filename=f"{job_id}-output.tar.gz",
            headers={"ETag": f'"{row.sha256}"', "X-Sandbox-Sha256": row.sha256},
        )

    return router
