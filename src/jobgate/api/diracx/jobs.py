"""DiracX's job routes under ``/api/jobs``: JDL submission, search, summary, statuses,
heartbeats, rescheduling, metadata, kill and delete.

JobIDs are integers (the job's ``seq``). Jobs the caller may not see are answered as jobs
that do not exist (404, or a ``failed`` entry), as everywhere in jobgate.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from jobgate.api import openapi
from jobgate.api.bodies import parse_body, validate
from jobgate.api.deps import Services, services
from jobgate.api.errors import Error, answers
from jobgate.api.security import Acc, submitter
from jobgate.auth.identity import Scope
from jobgate.auth.policy import Access
from jobgate.domain import diracx as dx
from jobgate.domain import jsontext
from jobgate.domain import limits as lim
from jobgate.errors import InvalidRequest, JobgateError, JobNotFound
from jobgate.service.diracx import DiracxJobs, StatusChange, failure

Svc = Annotated[Services, Depends(services)]
MAX_PER_PAGE = 10_000
MAX_JOB_ID = 2**63 - 1
JobNumber = Annotated[int, Field(ge=0, le=MAX_JOB_ID)]
"""A DiracX JobID: a job's ``seq``, a 64-bit integer."""
JobIdQuery = Annotated[list[JobNumber], Query(min_length=1, max_length=lim.IDS)]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        jsontext.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def diracx_jobs(svc: Services) -> DiracxJobs:
    """The use cases over the app's native jobs (cheap: built per request)."""
    return DiracxJobs(svc.native, max_jobs=svc.settings.diracx_max_jobs)


class JobIds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_ids: list[JobNumber] = Field(min_length=1, max_length=lim.IDS)


class StatusUpdate(BaseModel):
    """DiracX's JobStatusUpdate."""

    model_config = ConfigDict(extra="forbid")

    Status: str | None = None
    MinorStatus: lim.Text | None = None
    ApplicationStatus: lim.Text | None = None
    Source: lim.Text = "Unknown"


def _job_id(key: str, where: str) -> int:
    try:
        number = int(key)
    except ValueError:
        number = -1
    if not 0 <= number <= MAX_JOB_ID:
        raise InvalidRequest(
            "invalid job id", errors=[{"where": where, "what": f"{key!r} is not a JobID"}]
        )
    return number


async def _visible(acc: Access, dj: DiracxJobs, seqs: list[int], scope: Scope) -> dict[int, str]:
    """The job ids of those of ``seqs`` the caller may see (``scope`` checked first)."""
    acc.require(scope)
    ids = await dj.ids_of(seqs)
    seen = await acc.visible_ids(list(ids.values()))
    return {seq: job_id for seq, job_id in ids.items() if job_id in seen}


def _body_dict(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest(
            f"expected {what}", errors=[{"where": "body", "what": f"an object: {what}"}]
        )
    if len(body) > lim.IDS:
        raise InvalidRequest(
            "too many jobs", errors=[{"where": "body", "what": f"at most {lim.IDS} jobs"}]
        )
    return body


# DiracX heartbeat data → jobgate's heartbeat fields (DIRAC's Watchdog reports memory in
# kB); the rest (Vsize, AvailableDiskSpace) has no place in jobgate's heartbeat.
HEARTBEAT_FIELDS = {
    "LoadAverage": ("load", 1.0),
    "MemoryUsed": ("memory_bytes", 1024.0),
    "CPUConsumed": ("cpu_seconds", 1.0),
    "WallClockTime": ("wall_seconds", 1.0),
}


def heartbeat_fields(data: dict[str, Any], where: str) -> dict[str, Any]:
    """jobgate heartbeat fields of one job's DiracX heartbeat data (InvalidRequest naming
    a field that is not a non-negative number, or an output that is not text)."""
    fields: dict[str, Any] = {}
    for key, (name, factor) in HEARTBEAT_FIELDS.items():
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e18:
            raise InvalidRequest(
                "invalid heartbeat",
                errors=[{"where": f"{where}.{key}", "what": "a non-negative number"}],
            )
        fields[name] = int(value * factor) if name == "memory_bytes" else float(value)
    out = data.get("StandardOutput")
    if out is not None:
        if not isinstance(out, str):
            raise InvalidRequest(
                "invalid heartbeat",
                errors=[{"where": f"{where}.StandardOutput", "what": "text"}],
            )
        fields["stdout"] = out
    return fields


async def heartbeat_commands(svc: Services, jobs: dict[int, str]) -> list[dict[str, Any]]:
    """What a heartbeat answers: the commands for ``jobs`` (JobID → job id). jobgate sends
    jobs no commands (a kill is a cancel at the backend), so none is ever pending."""
    return []


def make_router() -> APIRouter:
    router = APIRouter(prefix="/api/jobs", tags=["diracx"])

    @router.post(
        "/jdl",
        status_code=201,
        summary="DiracX: submit jobs in JDL",
        responses=answers(403, 429),
        openapi_extra=openapi.body({"type": "array", "items": {"type": "string"}}),
    )
    async def submit_jdl_jobs(request: Request, svc: Svc, acc: Acc) -> Response:
        who = await submitter(acc, svc)
        body = await parse_body(request)
        if not isinstance(body, list) or not all(isinstance(t, str) for t in body):
            raise InvalidRequest(
                "expected a list of JDL strings",
                errors=[{"where": "body", "what": "a list of strings, one JDL each"}],
            )
        return _json(await diracx_jobs(svc).submit(body, who), 201)

    @router.post(
        "/search",
        summary="DiracX: search jobs",
        responses={
            206: {"description": "Partial Content: one page of the matching jobs"},
            416: {"model": Error, "description": "The page is past the last matching job"},
        },
        openapi_extra=openapi.body(openapi.ref(dx.SearchParams)),
    )
    async def search(
        request: Request,
        svc: Svc,
        acc: Acc,
        page: Annotated[int, Query(ge=1, le=2**31)] = 1,
        per_page: Annotated[int, Query(ge=1, le=MAX_PER_PAGE)] = 100,
    ) -> Response:
        acc.require(Scope.READ)
        raw = await parse_body(request) if await request.body() else {}
        params = validate(dx.SearchParams, raw or {})
        total, jobs = await diracx_jobs(svc).search(
            params, page=page, per_page=per_page, scope=acc.visibility()
        )
        # Content-Range as DiracX sets it (RFC 7233): 206 for a part, 416 past the end.
        if not jobs and total > 0:
            body = {
                "code": "range_not_satisfiable",
                "status": 416,
                "message": f"page {page} is past the last of the {total} matching jobs",
                "errors": [{"where": "query.page", "what": f"at most {-(-total // per_page)}"}],
            }
            return _json(body, 416, {"Content-Range": f"jobs */{total}"})
        if len(jobs) < total:
            first = per_page * (page - 1)
            last = first + len(jobs) - 1
            return _json(jobs, 206, {"Content-Range": f"jobs {first}-{last}/{total}"})
        return _json(jobs)

    @router.post(
        "/summary",
        summary="DiracX: count jobs grouped by attributes",
        openapi_extra=openapi.body(openapi.ref(dx.SummaryParams)),
    )
    async def summary(request: Request, svc: Svc, acc: Acc) -> Response:
        acc.require(Scope.READ)
        params = validate(dx.SummaryParams, await parse_body(request))
        return _json(await diracx_jobs(svc).summary(params, scope=acc.visibility()))

    @router.patch(
        "/status",
        summary="DiracX: set job statuses",
        responses=answers(403, 404),
        openapi_extra=openapi.body({"type": "object"}),
    )
    async def set_job_statuses(
        request: Request, svc: Svc, acc: Acc, force: bool = False
    ) -> Response:
        body = _body_dict(await parse_body(request), "{job_id: {timestamp: update}}")
        changes: dict[int, list[StatusChange]] = {}
        for key, by_time in body.items():
            seq = _job_id(key, f"body.{key}")
            if not isinstance(by_time, dict) or not by_time:
                raise InvalidRequest(
                    "invalid status update",
                    errors=[{"where": f"body.{key}", "what": "an object {timestamp: update}"}],
                )
            timed = []
            for stamp, raw in by_time.items():
                try:
                    at = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
                except ValueError:
                    raise InvalidRequest(
                        "invalid status update",
                        errors=[{"where": f"body.{key}.{stamp}", "what": "not an ISO 8601 time"}],
                    ) from None
                update = validate(StatusUpdate, raw, f"body.{key}.{stamp}")
                if update.Status is not None and update.Status not in dx.DIRAC_STATUSES:
                    raise InvalidRequest(
                        "invalid status update",
                        errors=[
                            {
                                "where": f"body.{key}.{stamp}.Status",
                                "what": f"one of {', '.join(dx.DIRAC_STATUSES)}",
                            }
                        ],
                    )
                timed.append(
                    (
                        at.timestamp(),
                        StatusChange(
                            update.Status,
                            update.MinorStatus,
                            update.ApplicationStatus,
                            update.Source,
                        ),
                    )
                )
            changes[seq] = [c for _t, c in sorted(timed, key=lambda tc: tc[0])]
        dj = diracx_jobs(svc)
        visible = await _visible(acc, dj, list(changes), Scope.SUBMIT)
        success: dict[str, Any] = {}
        failed: dict[str, Any] = {}
        for seq, updates in changes.items():
            job_id = visible.get(seq)
            if job_id is None:
                failed[str(seq)] = {"detail": "Not found"}
                continue
            try:
                for change in updates:
                    success[str(seq)] = await dj.change_status(job_id, change)
            except JobgateError as exc:
                success.pop(str(seq), None)
                failed[str(seq)] = failure(exc)
        result = {"success": success, "failed": failed}
        if not success:
            status = 404 if all(v == {"detail": "Not found"} for v in failed.values()) else 400
            return _json(
                {
                    "code": "not_found" if status == 404 else "invalid_request",
                    "status": status,
                    "message": "no status was changed",
                    "errors": [
                        {"where": f"body.{k}", "what": next(iter(v.values()))}
                        for k, v in failed.items()
                    ],
                    "detail": result,
                },
                status,
            )
        return _json(result)

    @router.patch(
        "/heartbeat",
        summary="DiracX: a job's heartbeat (answers its commands)",
        responses=answers(403, 404),
        openapi_extra=openapi.body({"type": "object"}),
    )
    async def add_heartbeat(request: Request, svc: Svc, acc: Acc) -> Response:
        body = _body_dict(await parse_body(request), "{job_id: heartbeat data}")
        seqs = [_job_id(k, f"body.{k}") for k in body]
        for key, data in body.items():
            if not isinstance(data, dict):
                raise InvalidRequest(
                    "invalid heartbeat",
                    errors=[{"where": f"body.{key}", "what": "an object of heartbeat data"}],
                )
        fields = {
            seq: heartbeat_fields(data, f"body.{key}")
            for seq, (key, data) in zip(seqs, body.items(), strict=True)
        }
        visible = await _visible(acc, diracx_jobs(svc), seqs, Scope.SUBMIT)
        missing = [s for s in seqs if s not in visible]
        if missing:
            raise JobNotFound(str(missing[0]))
        for seq, job_id in visible.items():
            svc.heartbeats.heartbeat(acc.caller.name, job_id, fields[seq])
        return _json(await heartbeat_commands(svc, visible))

    @router.post(
        "/reschedule",
        summary="DiracX: reschedule failed or killed jobs",
        responses=answers(403, 404),
        openapi_extra=openapi.body(openapi.ref(JobIds)),
    )
    async def reschedule_jobs(
        request: Request, svc: Svc, acc: Acc, reset_jobs: bool = False
    ) -> Response:
        body = validate(JobIds, await parse_body(request))
        dj = diracx_jobs(svc)
        visible = await _visible(acc, dj, body.job_ids, Scope.SUBMIT)
        success: dict[str, Any] = {}
        failed: dict[str, Any] = {}
        for seq in dict.fromkeys(body.job_ids):
            job_id = visible.get(seq)
            if job_id is None:
                failed[str(seq)] = {"detail": "Not found"}
                continue
            try:
                rec = await dj.reschedule(job_id, reset=reset_jobs)
                success[str(seq)] = {
                    "Status": dx.STATUS_OF[rec.state],
                    "MinorStatus": "Job Rescheduled",
                    "RescheduleCounter": rec.reschedules,
                }
            except JobgateError as exc:
                failed[str(seq)] = {"detail": exc.message}
        if not success:
            status = 404 if all(v == {"detail": "Not found"} for v in failed.values()) else 400
            return _json(
                {
                    "code": "not_found" if status == 404 else "invalid_request",
                    "status": status,
                    "message": "no job was rescheduled",
                    "errors": [
                        {"where": f"body.job_ids.{k}", "what": v["detail"]}
                        for k, v in failed.items()
                    ],
                    "detail": {"success": success, "failed": failed},
                },
                status,
            )
        return _json({"success": success, "failed": failed})

    @router.patch(
        "/metadata",
        status_code=204,
        summary="DiracX: set job attributes",
        responses=answers(403, 404),
        openapi_extra=openapi.body({"type": "object"}),
    )
    async def patch_metadata(request: Request, svc: Svc, acc: Acc) -> Response:
        body = _body_dict(await parse_body(request), "{job_id: {attribute: value}}")
        updates = {}
        for key, values in body.items():
            if not isinstance(values, dict):
                raise InvalidRequest(
                    "invalid metadata",
                    errors=[{"where": f"body.{key}", "what": "an object {attribute: value}"}],
                )
            updates[_job_id(key, f"body.{key}")] = values
        dj = diracx_jobs(svc)
        visible = await _visible(acc, dj, list(updates), Scope.SUBMIT)
        missing = [s for s in updates if s not in visible]
        if missing:
            raise JobNotFound(str(missing[0]))
        for seq, values in updates.items():
            await dj.set_metadata(visible[seq], dict(values))
        return Response(status_code=204)

    async def kill_or_delete(
        svc: Services, acc: Access, job_ids: list[int], delete: bool
    ) -> Response:
        dj = diracx_jobs(svc)
        visible = await _visible(acc, dj, job_ids, Scope.SUBMIT)
        failed = [s for s in dict.fromkeys(job_ids) if s not in visible]
        errors: list[dict[str, Any]] = [
            {"where": f"query.job_ids={s}", "what": "no such job"} for s in failed
        ]
        for seq, job_id in visible.items():
            try:
                if delete:
                    await dj.delete(job_id)
                else:
                    await dj.native.cancel(job_id)
            except JobgateError as exc:
                failed.append(seq)
                errors.append({"where": f"query.job_ids={seq}", "what": exc.message})
        if failed:
            what = "delete" if delete else "kill"
            return _json(
                {
                    "code": "not_found",
                    "status": 404,
                    "message": f"Failed to {what} {len(failed)} jobs out of {len(set(job_ids))}",
                    "errors": errors,
                    "detail": {
                        "valid_job_ids": sorted(set(job_ids) - set(failed)),
                        "failed_job_ids": sorted(failed),
                    },
                },
                404,
            )
        return _json(job_ids)

    @router.delete("/", summary="DiracX: delete jobs", responses=answers(403, 404))
    async def delete_bulk_jobs(svc: Svc, acc: Acc, job_ids: JobIdQuery) -> Response:
        return await kill_or_delete(svc, acc, job_ids, delete=True)

    @router.post("/kill", summary="DiracX: kill jobs", responses=answers(403, 404))
    async def kill_bulk_jobs(svc: Svc, acc: Acc, job_ids: JobIdQuery) -> Response:
        return await kill_or_delete(svc, acc, job_ids, delete=False)

    return router
