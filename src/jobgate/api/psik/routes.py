"""The psik_api 1.0 routes under ``JOBGATE_PSIK_PREFIX``: a translator onto
:class:`~jobgate.service.psik.PsikJobs`.

Answers have psik_api's shapes (a job id as a JSON string, ``null`` for start and
cancel, lists of status rows); errors have jobgate's one error body. Every route but
the listings acts on one job through the policy module's :class:`Access` (another
caller's job is a 404, a read-only credential may not change jobs). Routes psik_api
serves with and without a trailing slash are served both ways here too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.datastructures import UploadFile

from jobgate.api import openapi
from jobgate.api.bodies import parse_body, validate
from jobgate.api.deps import Services, services
from jobgate.api.errors import answers
from jobgate.api.files import declared_length
from jobgate.api.security import Acc, submitter
from jobgate.auth.identity import Scope
from jobgate.backends import registry
from jobgate.domain.models import now
from jobgate.domain.psik import (
    PSIK_STATE,
    PsikJobSpec,
    PsikState,
    PsikStatusValue,
    PsikStepInfo,
    PsikSystemStatus,
)
from jobgate.errors import InvalidRequest, PayloadTooLarge
from jobgate.service.psik import WORKDIR, PsikJobs

Svc = Annotated[Services, Depends(services)]
Backend = Annotated[str | None, Query(max_length=256)]
UPLOAD = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                        }
                    },
                    "required": ["files"],
                }
            }
        },
    }
}


def psik_jobs(svc: Svc) -> PsikJobs:
    s = svc.settings
    return PsikJobs(
        svc.native,
        logs=svc.logs,
        secrets=svc.secrets,
        backends=s.psik_backends,
        shell=s.psik_shell,
    )


Psik = Annotated[PsikJobs, Depends(psik_jobs)]


def _json(body: Any) -> JSONResponse:
    return JSONResponse(body)


def _status(psik: PsikJobs, svc: Services, name: str) -> PsikSystemStatus:
    _name, target = psik.backend(name)
    kind = registry.kind_of(svc.backends[target])
    return PsikSystemStatus(
        name=name,
        full_name=name,
        description=f"jobgate backend {target} ({kind})",
        system_type=kind,
        notes=[],
        status=PsikStatusValue.active,
        updated_at=now(),
    )


def _rows(rows: list[PsikStepInfo]) -> list[dict[str, Any]]:
    return [r.model_dump(mode="json") for r in rows]


def make_router(prefix: str) -> APIRouter:
    router = APIRouter(prefix=prefix, tags=["psik_api"])

    def both(path: str) -> list[str]:
        return [path, path + "/"]

    # -- backends ------------------------------------------------------------------------

    async def list_backends(
        psik: Psik, svc: Svc, name: Backend = None
    ) -> dict[str, PsikSystemStatus]:
        """The psik backends (``JOBGATE_PSIK_BACKENDS``) and the jobgate backend of each."""
        names = [name] if name is not None else list(psik.backends)
        return {n: _status(psik, svc, n) for n in names}

    for i, path in enumerate(both("/backends")):
        router.add_api_route(
            path,
            list_backends,
            methods=["GET"],
            summary="psik backends",
            include_in_schema=i == 0,
            responses=answers(404),
            response_model=dict[str, PsikSystemStatus],
        )

    @router.get("/backends/{name}", summary="One psik backend", response_model=PsikSystemStatus)
    async def get_backend(name: str, psik: Psik, svc: Svc) -> PsikSystemStatus:
        return _status(psik, svc, name)

    # -- jobs ----------------------------------------------------------------------------

    async def list_jobs(
        psik: Psik,
        acc: Acc,
        index: Annotated[int, Query(ge=0, le=10**9)] = 0,
        limit: Annotated[int | None, Query(ge=0, le=10**9)] = None,
        backend: Backend = None,
        state: PsikState | None = None,
    ) -> JSONResponse:
        """The last status row of each job the caller sees, newest first."""
        acc.require(Scope.READ)
        rows = await psik.listing(
            acc.visibility(), index=index, limit=limit, backend=backend, state=state
        )
        return _json(_rows(rows))

    async def post_job(
        request: Request, psik: Psik, svc: Svc, acc: Acc, backend: Backend = None
    ) -> JSONResponse:
        """Submit a job; answers its id."""
        return await _submit(request, psik, svc, acc, backend, hold=False)

    for i, path in enumerate(both("/jobs")):
        router.add_api_route(
            path,
            list_jobs,
            methods=["GET"],
            summary="List jobs (psik status rows)",
            include_in_schema=i == 0,
            responses=answers(404),
            response_model=list[PsikStepInfo],
        )
        router.add_api_route(
            path,
            post_job,
            methods=["POST"],
            summary="Submit a psik job",
            include_in_schema=i == 0,
            response_model=str,
            responses=answers(403, 404, 429),
            openapi_extra=openapi.body(openapi.ref(PsikJobSpec)),
        )

    async def _submit(
        request: Request,
        psik: PsikJobs,
        svc: Services,
        acc: Acc,
        backend: str | None,
        *,
        hold: bool,
    ) -> JSONResponse:
        who = await submitter(acc, svc)
        spec = validate(PsikJobSpec, await parse_body(request))
        rec = await psik.submit(spec, backend, hold=hold, owner=who)
        return _json(rec.id)

    @router.post(
        "/jobs/new",
        summary="Create a job without starting it (upload files, then start it)",
        response_model=str,
        responses=answers(403, 404, 429),
        openapi_extra=openapi.body(openapi.ref(PsikJobSpec)),
    )
    async def new_job(
        request: Request,
        psik: Psik,
        svc: Svc,
        acc: Acc,
        machine: Backend = None,
        backend: Backend = None,
    ) -> JSONResponse:
        # psik_api 1.0 names this route's backend ``machine``; ``backend`` works too.
        return await _submit(request, psik, svc, acc, machine or backend, hold=True)

    def checked(psik: PsikJobs, backend: str | None) -> None:
        # Job ids are global here; a named backend must exist, as in psik_api.
        if backend is not None:
            psik.backend(backend)

    @router.post(
        "/jobs/{jobid}/start",
        summary="Start a held job (or submit a failed or canceled one again)",
        response_model=None,
        responses=answers(403, 409),
    )
    async def start_job(jobid: str, psik: Psik, acc: Acc, backend: Backend = None) -> JSONResponse:
        checked(psik, backend)
        await psik.start(await acc.control(jobid))
        return _json(None)

    @router.get(
        "/jobs/{jobid}", summary="A job's status history", response_model=list[PsikStepInfo]
    )
    async def read_job(jobid: str, psik: Psik, acc: Acc, backend: Backend = None) -> JSONResponse:
        checked(psik, backend)
        return _json(_rows(await psik.history(await acc.job(jobid))))

    @router.delete(
        "/jobs/{jobid}", summary="Cancel a job", response_model=None, responses=answers(403)
    )
    async def delete_job(jobid: str, psik: Psik, acc: Acc, backend: Backend = None) -> JSONResponse:
        checked(psik, backend)
        await acc.control(jobid)
        await psik.cancel(jobid)
        return _json(None)

    @router.get("/jobs/{jobid}/state", summary="A job's psik state", response_model=PsikState)
    async def get_state(jobid: str, psik: Psik, acc: Acc, backend: Backend = None) -> JSONResponse:
        checked(psik, backend)
        return _json(PSIK_STATE[(await acc.job(jobid)).state].value)

    async def get_logs(jobid: str, psik: Psik, acc: Acc, backend: Backend = None) -> JSONResponse:
        """``stdout.N`` and ``stderr.N`` of the job's current submission N."""
        checked(psik, backend)
        return _json(await psik.logs(await acc.job(jobid)))

    async def get_scripts(
        jobid: str, psik: Psik, acc: Acc, backend: Backend = None
    ) -> JSONResponse:
        """``run``: the job's script as it runs."""
        checked(psik, backend)
        return _json(psik.scripts(await acc.job(jobid)))

    async def list_files(jobid: str, psik: Psik, acc: Acc, backend: Backend = None) -> JSONResponse:
        """The files uploaded into the job's working directory."""
        checked(psik, backend)
        await acc.job(jobid)
        return _json(await psik.files(jobid))

    async def upload_files(
        jobid: str, request: Request, psik: Psik, svc: Svc, acc: Acc, backend: Backend = None
    ) -> JSONResponse:
        """Upload ``files`` (multipart/form-data) into a held job's working directory."""
        checked(psik, backend)
        psik.check_held(await acc.control(jobid))
        await _receive(jobid, request, svc)
        return _json(None)

    for i, path in enumerate(both("/jobs/{jobid}/logs")):
        router.add_api_route(
            path,
            get_logs,
            methods=["GET"],
            summary="A job's logs",
            include_in_schema=i == 0,
            response_model=dict[str, str],
        )
    for i, path in enumerate(both("/jobs/{jobid}/scripts")):
        router.add_api_route(
            path,
            get_scripts,
            methods=["GET"],
            summary="A job's scripts",
            include_in_schema=i == 0,
            response_model=dict[str, str],
        )
    for i, path in enumerate(both("/jobs/{jobid}/files")):
        router.add_api_route(
            path,
            list_files,
            methods=["GET"],
            summary="Files in a job's working directory",
            include_in_schema=i == 0,
            response_model=dict[str, dict[str, int]],
        )
        router.add_api_route(
            path,
            upload_files,
            methods=["POST"],
            summary="Upload files into a held job's working directory",
            include_in_schema=i == 0,
            response_model=None,
            responses=answers(403, 409, 413),
            openapi_extra=UPLOAD,
        )

    @router.put(
        "/jobs/{jobid}/files/{fname:path}",
        summary="Upload one file (the request body) into a held job's working directory",
        response_model=None,
        responses=answers(403, 409, 413),
        openapi_extra=openapi.raw_body("application/octet-stream", "The file's content"),
    )
    async def put_file(
        jobid: str,
        fname: str,
        request: Request,
        psik: Psik,
        svc: Svc,
        acc: Acc,
        backend: Backend = None,
    ) -> JSONResponse:
        # What `curl --upload-file FILE .../files/` sends (psik_api 1.0 answers it 405).
        checked(psik, backend)
        psik.check_held(await acc.control(jobid))
        await svc.uploads.put(
            jobid,
            _in_workdir(fname),
            request.stream(),
            declared_size=declared_length(request),
        )
        return _json(None)

    @router.get(
        "/jobs/{jobid}/files/{fname:path}",
        summary="Download a file of a job's working directory (a directory: its listing)",
        response_model=None,
        responses={200: {"content": {"application/octet-stream": {}, "application/json": {}}}},
    )
    async def get_file(
        jobid: str, fname: str, psik: Psik, acc: Acc, backend: Backend = None
    ) -> Response:
        checked(psik, backend)
        await acc.job(jobid)
        found = await psik.file(jobid, fname)
        if isinstance(found, Path):
            return FileResponse(
                found, media_type="application/octet-stream", filename=Path(fname).name
            )
        return _json(found)

    return router


def _in_workdir(name: str) -> str:
    if not name:
        raise InvalidRequest(
            "a file needs a name", errors=[{"where": "path.fname", "what": "empty file name"}]
        )
    return f"{WORKDIR.strip('/')}/{name}"


async def _receive(job_id: str, request: Request, svc: Services) -> None:
    """Store each ``files`` part of a multipart body under the working directory."""
    limit = svc.uploads.max_bytes
    size = declared_length(request)
    if size is None:
        raise InvalidRequest(
            "a multipart upload needs a Content-Length",
            errors=[{"where": "header.Content-Length", "what": "missing"}],
        )
    if size > limit:
        raise PayloadTooLarge(
            f"the upload is larger than the limit of {limit} bytes",
            errors=[{"where": "body", "what": f"at most {limit} bytes"}],
        )
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise InvalidRequest(
            "expected a multipart/form-data body with 'files' parts",
            errors=[{"where": "header.Content-Type", "what": f"got {ctype or 'none'!r}"}],
        )
    async with request.form(max_files=1000, max_fields=100) as form:
        files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
        if not files:
            raise InvalidRequest(
                "no files to upload", errors=[{"where": "body.files", "what": "no file parts"}]
            )
        for i, part in enumerate(files):
            if not part.filename:
                raise InvalidRequest(
                    "cannot upload a file with no name",
                    errors=[{"where": f"body.files[{i}]", "what": "no filename"}],
                )

            async def chunks(part: UploadFile = part) -> Any:
                while data := await part.read(64 * 1024):
                    yield data

            await svc.uploads.put(job_id, _in_workdir(part.filename), chunks())
