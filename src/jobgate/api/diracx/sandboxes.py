"""DiracX's sandbox routes, over jobgate's content-addressed sandboxes.

DiracX hands out presigned S3 URLs; jobgate's sandbox store is its own directory, so the
URLs here are jobgate's: ``/api/jobs/sandbox/upload/<token>`` and ``…/download/<token>``,
where the token is sealed with the service's secret key (Fernet) and names the one
sandbox, the operation and an expiry ``JOBGATE_DIRACX_SANDBOX_URL_SECONDS`` away. Those
two routes need no credentials (the token is the credential), as presigned URLs need none.

A PFN is ``SB:jobgate|/S3/sandboxes/sha256:<sha256>.<format>``; the sandbox is the one
``/api/v1/sandboxes/<sha256>`` serves. As there, anyone who knows a sandbox's hash may
read it (content addressing: knowing the hash means knowing what was uploaded).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from jobgate.api import openapi
from jobgate.api.bodies import parse_body, validate
from jobgate.api.deps import Services, services
from jobgate.api.diracx.jobs import JobIds, JobNumber, _json, _visible, diracx_jobs
from jobgate.api.errors import answers
from jobgate.api.files import declared_length
from jobgate.api.security import Acc, public
from jobgate.auth.identity import Scope
from jobgate.errors import Forbidden, InvalidRequest, JobNotFound
from jobgate.service.diracx import sandbox_pfn, sandbox_sha
from jobgate.service.sandboxes import TooLarge
from jobgate.staging.sandbox import sandbox_ref

Svc = Annotated[Services, Depends(services)]
CHUNK = 1 << 20
FORM_OVERHEAD = 64 * 1024
JobPath = Annotated[JobNumber, Path()]


class SandboxInfo(BaseModel):
    """DiracX's SandboxInfo: what the client is about to upload."""

    model_config = ConfigDict(extra="forbid")

    checksum_algorithm: Literal["sha256"]
    checksum: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    size: int = Field(ge=1)
    format: Literal["tar.bz2", "tar.zst", "tar.gz"]


def _seal(svc: Services, op: str, sha: str, **extra: Any) -> str:
    expires = int(time.time()) + svc.settings.diracx_sandbox_url_seconds
    return svc.secrets.encrypt(json.dumps({"op": op, "sha": sha, "exp": expires, **extra}))


def _unseal(svc: Services, op: str, token: str) -> dict[str, Any]:
    plain = svc.secrets.decrypt(token)
    data = json.loads(plain) if plain else None
    if not isinstance(data, dict) or data.get("op") != op:
        raise Forbidden(
            "not a sandbox URL of this service",
            errors=[{"where": "path.token", "what": "invalid signature"}],
        )
    if int(data.get("exp", 0)) < time.time():
        raise Forbidden(
            "the sandbox URL has expired",
            errors=[{"where": "path.token", "what": "expired; ask for a new URL"}],
        )
    return data


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def _file_chunks(request: Request) -> AsyncIterator[bytes]:
    """The uploaded bytes: the ``file`` part of a multipart form (as S3 presigned POSTs
    take them), else the raw body."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=100)
        part = form.get("file")
        if part is None or isinstance(part, str):
            raise InvalidRequest(
                "no file in the form", errors=[{"where": "body.file", "what": "a file part"}]
            )
        while block := await part.read(CHUNK):
            yield block
        await part.close()
        return
    async for block in request.stream():
        yield block


def make_router() -> APIRouter:
    router = APIRouter(prefix="/api/jobs", tags=["diracx"])

    @router.post(
        "/sandbox",
        summary="DiracX: the PFN of a sandbox, and where to upload it if it is new",
        responses=answers(403),
        openapi_extra=openapi.body(openapi.ref(SandboxInfo)),
    )
    async def initiate_sandbox_upload(request: Request, svc: Svc, acc: Acc) -> Response:
        acc.require(Scope.SUBMIT)
        info = validate(SandboxInfo, await parse_body(request))
        sha = info.checksum.lower()
        if info.size > svc.sandboxes.max_bytes:
            what = f"at most {svc.sandboxes.max_bytes} bytes"
            raise InvalidRequest(
                "the sandbox is too large", errors=[{"where": "body.size", "what": what}]
            )
        pfn = sandbox_pfn(sha, info.format)
        if await svc.sandboxes.store.get(sha) is not None and svc.sandboxes.path(sha).is_file():
            return _json({"pfn": pfn, "url": None, "fields": {}})
        token = _seal(svc, "up", sha, size=info.size)
        url = f"{_base(request)}/api/jobs/sandbox/upload/{token}"
        return _json({"pfn": pfn, "url": url, "fields": {}})

    @router.post(
        "/sandbox/upload/{token}",
        status_code=204,
        include_in_schema=False,
        summary="DiracX: upload a sandbox to the URL initiate-upload answered",
        responses=answers(400, 403, 413),
    )
    @public
    async def upload_sandbox(token: str, request: Request, svc: Svc) -> Response:
        sealed = _unseal(svc, "up", token)
        # The form is spooled whole before its file part can be read: bound it first by
        # the size the URL was made for (plus room for the form's own lines).
        length = declared_length(request)
        if length is None or length > int(sealed["size"]) + FORM_OVERHEAD:
            raise TooLarge(
                f"the upload must declare a Content-Length of at most the sandbox's "
                f"{sealed['size']} bytes (plus {FORM_OVERHEAD} for a form)"
            )
        info = await svc.sandboxes.upload(_file_chunks(request), owner=None, declared_size=None)
        if info.sha256 != sealed["sha"]:
            raise InvalidRequest(
                "the upload is not the sandbox this URL is for",
                errors=[{"where": "body.file", "what": f"its sha256 is {info.sha256}"}],
            )
        return Response(status_code=204)

    @router.get("/sandbox", summary="DiracX: a URL to download a sandbox", responses=answers(404))
    async def get_sandbox_file(
        request: Request,
        svc: Svc,
        acc: Acc,
        pfn: Annotated[str, Query(max_length=256)],
    ) -> Response:
        acc.require(Scope.READ)
        sha = sandbox_sha(pfn)
        if sha is None:
            raise InvalidRequest(
                "not a sandbox PFN of this service",
                errors=[
                    {"where": "query.pfn", "what": "SB:jobgate|/S3/sandboxes/sha256:<hex>.<format>"}
                ],
            )
        await svc.sandboxes.find(sha)
        seconds = svc.settings.diracx_sandbox_url_seconds
        url = f"{_base(request)}/api/jobs/sandbox/download/{_seal(svc, 'down', sha)}"
        return _json({"url": url, "expires_in": seconds})

    @router.get(
        "/sandbox/download/{token}",
        include_in_schema=False,
        summary="DiracX: download a sandbox from the URL get-sandbox answered",
        response_class=FileResponse,
        responses=answers(403, 404),
    )
    @public
    async def download_sandbox(token: str, svc: Svc) -> FileResponse:
        sha = str(_unseal(svc, "down", token)["sha"])
        await svc.sandboxes.find(sha)
        return FileResponse(svc.sandboxes.path(sha), media_type="application/octet-stream")

    @router.post(
        "/sandbox/unassign",
        status_code=204,
        summary="DiracX: forget the output sandboxes of jobs",
        responses=answers(403, 404),
        openapi_extra=openapi.body(openapi.ref(JobIds)),
    )
    async def unassign_bulk_jobs_sandboxes(request: Request, svc: Svc, acc: Acc) -> Response:
        body = validate(JobIds, await parse_body(request))
        for job_id in (await _owned(svc, acc, body.job_ids, Scope.SUBMIT)).values():
            await svc.sandboxes.store.set_output(job_id, None)
        return Response(status_code=204)

    async def _owned(svc: Services, acc: Any, seqs: list[int], scope: Scope) -> dict[int, str]:
        visible = await _visible(acc, diracx_jobs(svc), seqs, scope)
        missing = [s for s in seqs if s not in visible]
        if missing:
            raise JobNotFound(str(missing[0]))
        return visible

    async def _sandboxes(svc: Services, job_id: str) -> dict[str, list[str]]:
        rec = await svc.jobs.get(job_id)
        inputs = []
        for inp in rec.spec.get("inputs") or []:
            sha = (
                sandbox_ref(str(inp.get("url") or ""))
                if str(inp.get("url", "")).startswith("sandbox:")
                else None
            )
            if sha is not None:
                inputs.append(sandbox_pfn(sha, "tar.zst"))
        out = await svc.sandboxes.store.output_of(job_id)
        return {"Input": inputs, "Output": [sandbox_pfn(out, "tar.gz")] if out else []}

    @router.get("/{job_id}/sandbox", summary="DiracX: a job's sandboxes", responses=answers(400))
    async def get_job_sandboxes(job_id: JobPath, svc: Svc, acc: Acc) -> Response:
        own = await _owned(svc, acc, [job_id], Scope.READ)
        return _json(await _sandboxes(svc, own[job_id]))

    @router.get(
        "/{job_id}/sandbox/{sandbox_type}",
        summary="DiracX: a job's input or output sandbox",
        responses=answers(400),
    )
    async def get_job_sandbox(
        job_id: JobPath, sandbox_type: Literal["input", "output"], svc: Svc, acc: Acc
    ) -> Response:
        own = await _owned(svc, acc, [job_id], Scope.READ)
        boxes = await _sandboxes(svc, own[job_id])
        return _json(boxes["Input" if sandbox_type == "input" else "Output"])

    @router.patch(
        "/{job_id}/sandbox/output",
        summary="DiracX: set a job's output sandbox",
        responses=answers(400, 403, 404),
        openapi_extra=openapi.body({"type": "string"}),
    )
    async def assign_sandbox_to_job(
        job_id: JobPath, request: Request, svc: Svc, acc: Acc
    ) -> Response:
        own = await _owned(svc, acc, [job_id], Scope.SUBMIT)
        pfn = await parse_body(request)
        sha = sandbox_sha(pfn) if isinstance(pfn, str) else None
        if sha is None:
            raise InvalidRequest(
                "not a sandbox PFN of this service",
                errors=[{"where": "body", "what": "a PFN string as initiate-upload answers"}],
            )
        await svc.sandboxes.find(sha)
        await svc.sandboxes.store.set_output(own[job_id], sha)
        return _json(None)

    @router.delete(
        "/{job_id}/sandbox",
        summary="DiracX: forget a job's output sandbox",
        responses=answers(400, 403),
    )
    async def unassign_job_sandboxes(job_id: JobPath, svc: Svc, acc: Acc) -> Response:
        own = await _owned(svc, acc, [job_id], Scope.SUBMIT)
        await svc.sandboxes.store.set_output(own[job_id], None)
        return _json(None)

    return router
