"""The native jobs API under ``/api/v1``: a translator onto :class:`NativeJobs`.

Bodies are JSON or YAML (``Content-Type: application/yaml``). Submissions honour an
``Idempotency-Key`` header: a retry with the same key and body gets the first answer,
the same key with another body is a 422, a retry while the first is running a 409.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, field_validator

from jobgate.api import openapi
from jobgate.api.bodies import body_of, parse_body, read_body, validate
from jobgate.api.deps import Services, services
from jobgate.api.errors import answers
from jobgate.api.security import Acc, submitter
from jobgate.auth.identity import Scope
from jobgate.auth.policy import Access
from jobgate.domain import jsontext
from jobgate.domain import limits as lim
from jobgate.domain.models import JobEvent, JobRecord, rfc3339
from jobgate.domain.native import MAX_PRIORITY, JobRequest, ParametricRequest
from jobgate.domain.query import Filter, SearchRequest, SummaryRequest
from jobgate.domain.states import State
from jobgate.errors import Conflict, InvalidRequest, JobgateError, JobNotFound
from jobgate.service.native import ItemResult, NativeJobs

Svc = Annotated[Services, Depends(services)]
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        jsontext.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str),
        status_code=status,
        media_type="application/json",
    )


def job_view(rec: JobRecord) -> dict[str, Any]:
    """The native representation of a job."""
    spec = {k: v for k, v in rec.spec.items() if not k.startswith("_")}
    return {
        "id": rec.id,
        "state": rec.state.value,
        "name": spec.get("name"),
        "owner": rec.owner,
        "backend": rec.backend,
        "group": rec.group_id,
        "priority": rec.priority,
        "labels": spec.get("tags") or {},
        "created_at": rfc3339(rec.created_at),
        "updated_at": rfc3339(rec.updated_at) if rec.updated_at else None,
        "detail": rec.detail,
        "app_status": rec.app_status,
        "attempt": rec.attempt,
        "reschedules": rec.reschedules,
        "retries": rec.retries,
        "stalled": rec.stalled,
        "heartbeat": _heartbeat_view(rec),
        "spec": spec,
        "logs": rec.logs or [],
    }


def _heartbeat_view(rec: JobRecord) -> dict[str, Any] | None:
    if rec.heartbeat_at is None:
        return None
    return {"at": rfc3339(rec.heartbeat_at), **(rec.heartbeat or {})}


def event_view(e: JobEvent) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "job_id": e.job_id,
        "at": rfc3339(e.at),
        "from_state": e.from_state,
        "state": e.to_state,
        "detail": e.detail,
        "app_status": e.app_status,
        "source": e.source,
    }


def caller(request: Request) -> str | None:
    """The authenticated caller's name (None: the anonymous caller of JOBGATE_AUTH=none)."""
    who = getattr(request.state, "caller", None)
    return None if who is None else who.name


async def scoped(
    acc: Access, ids: list[str], action: Callable[[str], Awaitable[State | None]]
) -> Callable[[str], Awaitable[State | None]]:
    """``action`` for bulk use: 403 without the submit scope, per-item 404 for others' jobs."""
    acc.require(Scope.SUBMIT)
    visible = await acc.visible_ids(ids)

    async def run(job_id: str) -> State | None:
        if job_id not in visible:
            raise JobNotFound(job_id)
        return await action(job_id)

    return run


async def idempotent(
    svc: Services, request: Request, key: str | None, run: Callable[[], Awaitable[Response]]
) -> Response:
    """Run a submission at most once per (caller, Idempotency-Key)."""
    if key is None:
        return await run()
    scope = caller(request) or "anonymous"
    head = request.method.encode() + b" " + request.url.path.encode() + b"\n"
    digest = hashlib.sha256(head + await read_body(request)).hexdigest()
    claim = await svc.idempotency.begin(scope, key, digest)
    if claim.status == "mismatch":
        return _json(
            {
                "code": "idempotency_key_reused",
                "status": 422,
                "message": "this Idempotency-Key was used with a different request",
            },
            422,
        )
    if claim.status == "in_flight":
        raise Conflict("a request with this Idempotency-Key is still being processed")
    if claim.status == "done":
        response = _json(claim.response, claim.status_code or 200)
        response.headers["Idempotent-Replayed"] = "true"
        return response
    try:
        response = await run()
    except JobgateError as exc:
        if exc.status < 500:
            await svc.idempotency.finish(scope, key, exc.status, exc.to_json())
        else:
            await svc.idempotency.forget(scope, key)
        raise
    except BaseException:
        await svc.idempotency.forget(scope, key)
        raise
    await svc.idempotency.finish(scope, key, response.status_code, json.loads(bytes(response.body)))
    return response


SUBMISSION_ANSWERS = answers(403, 409, 422, 429)
"""Besides 400: 409 while a request with the same Idempotency-Key runs, 422 when the key
came with another body."""


class BulkRequest(BaseModel):
    """``POST /jobs/bulk``: the jobs to submit in one transaction."""

    jobs: list[JobRequest] = Field(min_length=1)


JobId = Annotated[str, Field(max_length=lim.ID)]


class IdList(BaseModel):
    ids: list[JobId] = Field(min_length=1, max_length=lim.IDS)


class Patch(BaseModel):
    priority: lim.Int | None = Field(default=None, ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    labels: dict[lim.TagKey, lim.TagValue | None] | None = Field(default=None, max_length=lim.TAGS)
    app_status: lim.Text | None = None

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str | None] | None) -> dict[str, str | None] | None:
        if value is not None and "" in value:
            raise ValueError("label keys must not be empty")
        return value


class Heartbeat(BaseModel):
    """``PATCH /jobs/{id}/heartbeat``: what a running job reports of itself."""

    load: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    memory_bytes: lim.Int | None = Field(default=None, ge=0)
    cpu_seconds: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    wall_seconds: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    stdout: str | None = Field(default=None, max_length=65536)
    """The latest lines of output (the last 4 KiB are kept)."""
    app_status: lim.Text | None = None


class BulkPatch(Patch):
    ids: list[JobId] = Field(min_length=1, max_length=lim.IDS)


IdBody = Annotated[IdList, Depends(body_of(IdList))]
IDS_BODY = openapi.body(openapi.ref(IdList))
PatchBody = Annotated[Patch, Depends(body_of(Patch))]
HeartbeatBody = Annotated[Heartbeat, Depends(body_of(Heartbeat))]
BulkPatchBody = Annotated[BulkPatch, Depends(body_of(BulkPatch))]


def owner_filters(filters: list[Filter], acc: Access) -> list[Filter]:
    """Owner filters with bare names (``owner = alice``) meaning that name in every namespace."""

    def names(value: Any) -> list[Any]:
        values = value if isinstance(value, list) else [value]
        return [
            n for v in values for n in (acc.policy.owner_names(v) if isinstance(v, str) else [v])
        ]

    out = []
    for f in filters:
        if f.field == "owner" and f.op in ("eq", "neq", "in", "not_in"):
            op = {"eq": "in", "neq": "not_in"}.get(f.op, f.op)
            f = Filter(field="owner", op=op, value=names(f.value))
        out.append(f)
    return out


def _results(results: list[ItemResult]) -> dict[str, Any]:
    return {
        "results": [r.to_json() for r in results],
        "succeeded": sum(r.error is None for r in results),
        "failed": sum(r.error is not None for r in results),
    }


def make_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["jobs"])

    def native(svc: Services) -> NativeJobs:
        return svc.native

    @router.post(
        "/jobs",
        status_code=201,
        summary="Submit one job (JSON or YAML)",
        responses=SUBMISSION_ANSWERS,
        openapi_extra=openapi.body(openapi.ref(JobRequest)),
    )
    async def submit(request: Request, svc: Svc, acc: Acc, key: IdemKey = None) -> Response:
        # Before the idempotency record: a 403 or 429 must not be replayed for this key.
        who = await submitter(acc, svc)

        async def run() -> Response:
            req = validate(JobRequest, await parse_body(request))
            rec = await native(svc).submit(req, owner=who)
            return _json(job_view(rec), 201)

        return await idempotent(svc, request, key, run)

    @router.post(
        "/jobs/validate",
        summary="Check one job as submitting it would, without creating it",
        responses=answers(403),
        openapi_extra=openapi.body(openapi.ref(JobRequest)),
    )
    async def validate_job(request: Request, svc: Svc, acc: Acc) -> Response:
        acc.require(Scope.SUBMIT)  # no rate-limit token: checking is not submitting
        req = validate(JobRequest, await parse_body(request))
        return _json(native(svc).check(req).to_json())

    @router.post(
        "/jobs/bulk",
        summary="Submit many jobs in one transaction",
        responses=SUBMISSION_ANSWERS,
        openapi_extra=openapi.body(
            {
                "anyOf": [
                    openapi.ref(BulkRequest),
                    {"type": "array", "items": openapi.ref(JobRequest), "minItems": 1},
                ]
            },
            'Either {"jobs": [...]} or the list of jobs itself',
        ),
    )
    async def submit_bulk(request: Request, svc: Svc, acc: Acc, key: IdemKey = None) -> Response:
        who = await submitter(acc, svc)

        async def run() -> Response:
            body = await parse_body(request)
            items = body.get("jobs") if isinstance(body, dict) else body
            if not isinstance(items, list) or not items:
                raise InvalidRequest(
                    'expected {"jobs": [...]} or a list of jobs',
                    errors=[{"where": "body.jobs", "what": "a non-empty list of jobs"}],
                )
            if len(items) > lim.BULK_JOBS:
                what = f"at most {lim.BULK_JOBS} jobs in one submission"
                raise InvalidRequest(what, errors=[{"where": "body.jobs", "what": what}])
            results = await native(svc).submit_many(items, owner=who)
            return _json(_results(results))

        return await idempotent(svc, request, key, run)

    @router.post(
        "/jobs/parametric",
        summary="Expand one description into many jobs",
        responses=SUBMISSION_ANSWERS,
        openapi_extra=openapi.body(openapi.ref(ParametricRequest)),
    )
    async def submit_parametric(
        request: Request, svc: Svc, acc: Acc, key: IdemKey = None
    ) -> Response:
        who = await submitter(acc, svc)

        async def run() -> Response:
            req = validate(ParametricRequest, await parse_body(request))
            group, results = await native(svc).submit_parametric(req, owner=who)
            return _json({"group": group, **_results(results)})

        return await idempotent(svc, request, key, run)

    @router.post(
        "/jobs/search",
        summary="Search jobs (filters, sort, paging, fields)",
        openapi_extra=openapi.body(openapi.ref(SearchRequest)),
    )
    async def search(request: Request, svc: Svc, acc: Acc) -> Response:
        req = validate(SearchRequest, await parse_body(request))
        req = req.model_copy(update={"filters": owner_filters(req.filters, acc)})
        items, cursor = await native(svc).search(req, owner=acc.visibility())
        return _json({"jobs": items, "next_cursor": cursor})

    @router.post(
        "/jobs/summary",
        summary="Count jobs grouped by fields",
        openapi_extra=openapi.body(openapi.ref(SummaryRequest)),
    )
    async def summary(request: Request, svc: Svc, acc: Acc) -> Response:
        req = validate(SummaryRequest, await parse_body(request))
        req = req.model_copy(update={"filters": owner_filters(req.filters, acc)})
        return _json({"groups": await native(svc).summary(req, owner=acc.visibility())})

    @router.post(
        "/jobs/cancel",
        summary="Cancel many jobs",
        responses=answers(403),
        openapi_extra=openapi.body(openapi.ref(IdList)),
    )
    async def cancel_many(body: IdBody, svc: Svc, acc: Acc) -> Response:
        action = await scoped(acc, body.ids, native(svc).cancel)
        return _json(_results(await native(svc).bulk(body.ids, action)))

    @router.post(
        "/jobs/reschedule",
        summary="Reschedule many jobs",
        responses=answers(403),
        openapi_extra=openapi.body(openapi.ref(IdList)),
    )
    async def reschedule_many(body: IdBody, svc: Svc, acc: Acc) -> Response:
        action = await scoped(acc, body.ids, native(svc).reschedule)
        return _json(_results(await native(svc).bulk(body.ids, action)))

    @router.post(
        "/jobs/start",
        summary="Start many held jobs",
        responses=answers(403),
        openapi_extra=openapi.body(openapi.ref(IdList)),
    )
    async def start_many(body: IdBody, svc: Svc, acc: Acc) -> Response:
        action = await scoped(acc, body.ids, native(svc).start)
        return _json(_results(await native(svc).bulk(body.ids, action)))

    @router.post(
        "/jobs/delete",
        summary="Delete many final jobs",
        responses=answers(403),
        openapi_extra=openapi.body(openapi.ref(IdList)),
    )
    async def delete_many(body: IdBody, svc: Svc, acc: Acc) -> Response:
        acc.require(Scope.SUBMIT)
        visible = await acc.visible_ids(body.ids)
        return _json(_results(await native(svc).delete_many(body.ids, only=visible)))

    @router.post(
        "/jobs/patch",
        summary="Change priority or labels of many jobs",
        responses=answers(403),
        openapi_extra=openapi.body(openapi.ref(BulkPatch)),
    )
    async def patch_many(body: BulkPatchBody, svc: Svc, acc: Acc) -> Response:
        async def patch(job_id: str) -> Any:
            rec = await native(svc).patch(
                job_id, priority=body.priority, labels=body.labels, app_status=body.app_status
            )
            return rec.state

        return _json(_results(await native(svc).bulk(body.ids, await scoped(acc, body.ids, patch))))

    @router.get("/jobs/{job_id}", summary="One job")
    async def get(job_id: str, acc: Acc) -> Response:
        return _json(job_view(await acc.job(job_id)))

    @router.get("/jobs/{job_id}/events", summary="Status history")
    async def events(job_id: str, svc: Svc, acc: Acc) -> Response:
        await acc.job(job_id)
        return _json({"events": [event_view(e) for e in await native(svc).events(job_id)]})

    @router.post("/jobs/{job_id}/cancel", summary="Cancel a job", responses=answers(403))
    async def cancel(job_id: str, svc: Svc, acc: Acc) -> Response:
        await acc.control(job_id)
        return _json({"id": job_id, "state": (await native(svc).cancel(job_id)).value})

    @router.post(
        "/jobs/{job_id}/reschedule",
        summary="Run a failed or canceled job again",
        responses=answers(403, 409),
    )
    async def reschedule(job_id: str, svc: Svc, acc: Acc) -> Response:
        await acc.control(job_id)
        return _json({"id": job_id, "state": (await native(svc).reschedule(job_id)).value})

    @router.post("/jobs/{job_id}/start", summary="Queue a held job", responses=answers(403, 409))
    async def start(job_id: str, svc: Svc, acc: Acc) -> Response:
        await acc.control(job_id)
        return _json({"id": job_id, "state": (await native(svc).start(job_id)).value})

    @router.delete(
        "/jobs/{job_id}",
        status_code=204,
        summary="Delete a final job and its data",
        responses=answers(403, 409),
    )
    async def delete(job_id: str, svc: Svc, acc: Acc) -> Response:
        await acc.control(job_id)
        await native(svc).delete(job_id)
        return Response(status_code=204)

    @router.patch(
        "/jobs/{job_id}/heartbeat",
        status_code=204,
        summary="Report that a running job is alive (load, memory, CPU, output, status)",
        responses=answers(403, 409),
        openapi_extra=openapi.body(openapi.ref(Heartbeat)),
    )
    async def heartbeat(
        job_id: str, request: Request, body: HeartbeatBody, svc: Svc, acc: Acc
    ) -> Response:
        # The job's own token (JOBGATE_JOB_TOKEN), or a caller who may control the job.
        if getattr(request.state, "job_token", None) != job_id:
            await acc.control(job_id)
        svc.heartbeats.heartbeat(acc.caller.name, job_id, body.model_dump(exclude_none=True))
        return Response(status_code=204)

    @router.patch(
        "/jobs/{job_id}",
        summary="Change priority, labels or application status",
        responses=answers(403),
        openapi_extra=openapi.body(openapi.ref(Patch)),
    )
    async def patch(job_id: str, body: PatchBody, svc: Svc, acc: Acc) -> Response:
        await acc.control(job_id)
        rec = await native(svc).patch(
            job_id, priority=body.priority, labels=body.labels, app_status=body.app_status
        )
        return _json(job_view(rec))

    return router
