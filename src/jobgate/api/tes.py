"""GA4GH TES v1.1: a translator from the spec's wire format onto the job service.

Views (spec §view): MINIMAL = id and state; BASIC = everything but executor stdout/stderr,
input content and system_logs; FULL = everything. Nothing outside the spec is returned.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from jobgate import __version__
from jobgate.api import openapi, tes1
from jobgate.api.bodies import body_of
from jobgate.api.deps import Services, services
from jobgate.api.errors import answers
from jobgate.api.security import Acc, public, submitter
from jobgate.auth.identity import Scope
from jobgate.domain import jsontext
from jobgate.domain.models import FileType, JobRecord, OutputFileLog, TaskLog, TaskSpec, rfc3339
from jobgate.domain.states import State
from jobgate.staging import OUTPUT_SCHEMES, storage


class TesTaskMinimal(BaseModel):
    """tesTask in the MINIMAL view (the default): its id and state only."""

    model_config = ConfigDict(extra="forbid")

    id: str
    state: State


class TesTask(TaskSpec):
    """tesTask in the FULL view (documentation only: :func:`task_view` renders responses)."""

    id: str
    state: State
    logs: list[TaskLog] | None = None
    creation_time: str | None = None


class TesInputBasic(BaseModel):
    """tesInput in the BASIC view: without ``content``."""

    name: str | None = None
    description: str | None = None
    url: str | None = None
    path: str
    type: FileType | None = None
    streamable: bool | None = None


class TesExecutorLogBasic(BaseModel):
    """tesExecutorLog in the BASIC view: without ``stdout`` and ``stderr``."""

    start_time: str | None = None
    end_time: str | None = None
    exit_code: int


class TesTaskLogBasic(BaseModel):
    """tesTaskLog in the BASIC view: without ``system_logs``; executor logs without output."""

    logs: list[TesExecutorLogBasic] = Field(default_factory=list)
    metadata: dict[str, str] | None = None
    start_time: str | None = None
    end_time: str | None = None
    outputs: list[OutputFileLog] = Field(default_factory=list)


class TesTaskBasic(TesTask):
    """tesTask in the BASIC view: all but input content, executor output and system_logs."""

    inputs: list[TesInputBasic] | None = None  # type: ignore[assignment]
    logs: list[TesTaskLogBasic] | None = None  # type: ignore[assignment]


TaskAnyView = TesTaskMinimal | TesTaskBasic | TesTask
"""A task in the requested view. ``anyOf``, not ``oneOf``: a BASIC document is also a
valid FULL one (FULL's extra fields are optional), so ``oneOf`` would reject it."""

VIEW_NOTE = (
    "The task's shape depends on `view`: MINIMAL (the default) answers `TesTaskMinimal` "
    "(id and state only, no `executors`), BASIC `TesTaskBasic`, FULL `TesTask`."
)


class TesListTasksResponse(BaseModel):
    tasks: list[TaskAnyView]
    next_page_token: str | None = None


class TesCreateTaskResponse(BaseModel):
    id: str


class View(StrEnum):
    MINIMAL = "MINIMAL"
    BASIC = "BASIC"
    FULL = "FULL"


def _json(body: Any) -> Response:
    return Response(
        jsontext.dumps(body, separators=(",", ":"), ensure_ascii=False),
        media_type="application/json",
    )


def task_view(rec: JobRecord, view: View) -> dict[str, Any]:
    """The tesTask document of ``rec`` in ``view``."""
    if view == View.MINIMAL:
        return {"id": rec.id, "state": rec.state.value}
    task: dict[str, Any] = {"id": rec.id, "state": rec.state.value}
    for key in tes1.SPEC_FIELDS:
        if key in rec.spec:
            task[key] = rec.spec[key]
    if rec.logs:
        task["logs"] = rec.logs
    task["creation_time"] = rfc3339(rec.created_at)
    if view == View.BASIC:
        _strip_for_basic(task)
    return task


LIVE_TAIL = 64 * 1024
"""Bytes of each executor stream a running task's FULL view shows (the spec's "tail")."""


async def _live_tails(svc: Services, rec: JobRecord, task: dict[str, Any]) -> None:
    """Put the stdout/stderr written so far in a running task's last log, one executor log
    per executor up to the last one that wrote anything (``exit_code`` is 0 until it ends,
    as the spec requires one)."""
    job = rec.to_job()
    tails: list[dict[str, Any]] = []
    for index in range(len(job.executors)):
        out = await svc.logs.tail(job, index, "stdout", LIVE_TAIL)
        err = await svc.logs.tail(job, index, "stderr", LIVE_TAIL)
        tails.append({"stdout": out, "stderr": err, "exit_code": 0})
    while tails and not (tails[-1]["stdout"] or tails[-1]["stderr"]):
        tails.pop()
    if not tails:
        return
    logs = [dict(tl) for tl in task.get("logs") or [{}]]
    logs[-1] = {**logs[-1], "logs": tails}
    task["logs"] = logs


def _strip_for_basic(task: dict[str, Any]) -> None:
    if "inputs" in task:
        task["inputs"] = [{k: v for k, v in i.items() if k != "content"} for i in task["inputs"]]
    if "logs" in task:
        logs = []
        for tl in task["logs"]:
            tl = {k: v for k, v in tl.items() if k != "system_logs"}
            if "logs" in tl:
                tl["logs"] = [
                    {k: v for k, v in el.items() if k not in ("stdout", "stderr")}
                    for el in tl["logs"]
                ]
            logs.append(tl)
        task["logs"] = logs


def _description(svc: Services) -> str:
    backend = svc.backends[svc.jobs.default_backend].describe()
    return (
        "jobgate: GA4GH TES v1.1 over local and batch backends "
        f"(runtime: {backend.get('runtime', 'n/a')}; outputs: {', '.join(OUTPUT_SCHEMES)})"
    )


def legacy_service_info(svc: Services) -> dict[str, Any]:
    """``GET /v1/tasks/service-info``: the TES 1.0 document."""
    return tes1.service_info(svc.settings.service_name, _description(svc), storage(svc.settings))


def service_info(svc: Services) -> dict[str, Any]:
    s = svc.settings
    return {
        "id": s.service_id,
        "name": s.service_name,
        "type": {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"},
        "description": _description(svc),
        "organization": {"name": s.organization_name, "url": s.organization_url},
        "version": __version__,
        "storage": storage(s),
        "tesResources_backend_parameters": sorted(svc.jobs.backend_parameter_keys),
    }


Svc = Annotated[Services, Depends(services)]
TaskBody = Annotated[TaskSpec, Depends(body_of(TaskSpec))]


def make_router(*, legacy: bool = False) -> APIRouter:
    """The TES routes; ``legacy`` renders tasks as TES 1.0 documents (:mod:`.tes1`)."""
    router = APIRouter(tags=["GA4GH TES v1.1"])

    def render(rec: JobRecord, view: View) -> dict[str, Any]:
        doc = task_view(rec, view)
        return tes1.task(doc) if legacy else doc

    @router.get("/service-info", summary="GetServiceInfo")
    @public
    async def get_service_info(svc: Svc) -> Response:
        return _json(service_info(svc))

    @router.post(
        "/tasks/{task_id}:cancel",
        summary="CancelTask",
        responses={200: {"model": dict[str, str]}, **answers(403)},
    )
    async def cancel_task(task_id: str, svc: Svc, acc: Acc) -> Response:
        await acc.control(task_id)
        await svc.jobs.cancel(task_id)
        return _json({})

    @router.post(
        "/tasks",
        summary="CreateTask",
        responses={200: {"model": TesCreateTaskResponse}, **answers(403, 429)},
        openapi_extra=openapi.body(openapi.ref(TaskSpec)),
    )
    async def create_task(task: TaskBody, svc: Svc, acc: Acc) -> Response:
        who = await submitter(acc, svc)
        job_id = await svc.jobs.submit(
            task, owner=who.owner, share_group=who.share_group, credential=who.credential
        )
        return _json({"id": job_id})

    @router.post(
        "/tasks:validate",
        summary="ValidateTask (jobgate): every check CreateTask runs, nothing created",
        responses=answers(403),
        openapi_extra=openapi.body(openapi.ref(TaskSpec)),
    )
    async def validate_task(task: TaskBody, svc: Svc, acc: Acc) -> Response:
        # The submit scope, but no rate-limit token: checking is not submitting.
        acc.require(Scope.SUBMIT)
        return _json(svc.jobs.check(task).to_json())

    @router.get(
        "/tasks",
        summary="ListTasks",
        description=VIEW_NOTE,
        responses={200: {"model": TesListTasksResponse}},
    )
    async def list_tasks(
        svc: Svc,
        acc: Acc,
        name_prefix: str | None = None,
        state: State | None = None,
        tag_key: Annotated[list[str] | None, Query()] = None,
        tag_value: Annotated[list[str] | None, Query()] = None,
        page_size: int | None = None,
        page_token: str | None = None,
        view: View = View.MINIMAL,
    ) -> Response:
        keys, values = tag_key or [], tag_value or []
        tags = {k: (values[i] if i < len(values) else "") for i, k in enumerate(keys)}
        records, token = await svc.jobs.page(
            name_prefix=name_prefix,
            state=state,
            tags=tags,
            page_size=page_size,
            page_token=page_token,
            minimal=view == View.MINIMAL,
            visible=acc.visibility(),
        )
        body: dict[str, Any] = {"tasks": [render(r, view) for r in records]}
        if token:
            body["next_page_token"] = token
        return _json(body)

    @router.get(
        "/tasks/{task_id}",
        summary="GetTask",
        description=VIEW_NOTE,
        responses={200: {"model": TaskAnyView}},
    )
    async def get_task(acc: Acc, svc: Svc, task_id: str, view: View = View.MINIMAL) -> Response:
        rec = await acc.job(task_id)
        task = task_view(rec, view)
        if view == View.FULL and rec.state == State.RUNNING:
            await _live_tails(svc, rec, task)
        return _json(tes1.task(task) if legacy else task)

    return router
