"""GA4GH TES v1.1: a translator from the spec's wire format onto the job service.

Views (spec §view): MINIMAL = id and state; BASIC = everything but executor stdout/stderr,
input content and system_logs; FULL = everything. Nothing outside the spec is returned.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel

from jobgate import __version__
from jobgate.api.deps import Services, services
from jobgate.api.security import Acc, public, submitter
from jobgate.domain.models import JobRecord, TaskLog, TaskSpec, rfc3339
from jobgate.domain.states import State
from jobgate.staging import OUTPUT_SCHEMES, storage

# Fields of tesTask a stored spec may hold (the native API stores more; TES shows these).
TES_SPEC_FIELDS = (
    "name",
    "description",
    "inputs",
    "outputs",
    "resources",
    "executors",
    "volumes",
    "tags",
)


class TesTask(TaskSpec):
    """tesTask as returned (documentation only: responses are rendered by :func:`task_view`)."""

    id: str
    state: State
    logs: list[TaskLog] | None = None
    creation_time: str | None = None


class TesListTasksResponse(BaseModel):
    tasks: list[TesTask]
    next_page_token: str | None = None


class TesCreateTaskResponse(BaseModel):
    id: str


class View(StrEnum):
    MINIMAL = "MINIMAL"
    BASIC = "BASIC"
    FULL = "FULL"


def _json(body: Any) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        media_type="application/json",
    )


def task_view(rec: JobRecord, view: View) -> dict[str, Any]:
    """The tesTask document of ``rec`` in ``view``."""
    if view == View.MINIMAL:
        return {"id": rec.id, "state": rec.state.value}
    task: dict[str, Any] = {"id": rec.id, "state": rec.state.value}
    for key in TES_SPEC_FIELDS:
        if key in rec.spec:
            task[key] = rec.spec[key]
    if rec.logs:
        task["logs"] = rec.logs
    task["creation_time"] = rfc3339(rec.created_at)
    if view == View.BASIC:
        _strip_for_basic(task)
    return task


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


def service_info(svc: Services) -> dict[str, Any]:
    s = svc.settings
    backend = svc.backends[svc.jobs.default_backend].describe()
    return {
        "id": s.service_id,
        "name": s.service_name,
        "type": {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"},
        "description": "jobgate: GA4GH TES v1.1 over local and batch backends "
        f"(runtime: {backend.get('runtime', 'n/a')}; outputs: {', '.join(OUTPUT_SCHEMES)})",
        "organization": {"name": s.organization_name, "url": s.organization_url},
        "version": __version__,
        "storage": storage(s),
        "tesResources_backend_parameters": sorted(svc.jobs.backend_parameter_keys),
    }


Svc = Annotated[Services, Depends(services)]


def make_router() -> APIRouter:
    router = APIRouter(tags=["GA4GH TES v1.1"])

    @router.get("/service-info", summary="GetServiceInfo")
    @public
    async def get_service_info(svc: Svc) -> Response:
        return _json(service_info(svc))

    @router.post(
        "/tasks/{task_id}:cancel", summary="CancelTask", responses={200: {"model": dict[str, str]}}
    )
    async def cancel_task(task_id: str, svc: Svc, acc: Acc) -> Response:
        await acc.control(task_id)
        await svc.jobs.cancel(task_id)
        return _json({})

    @router.post("/tasks", summary="CreateTask", responses={200: {"model": TesCreateTaskResponse}})
    async def create_task(task: TaskSpec, svc: Svc, acc: Acc) -> Response:
        who = await submitter(acc, svc)
        job_id = await svc.jobs.submit(
            task, owner=who.owner, share_group=who.share_group, credential=who.credential
        )
        return _json({"id": job_id})

    @router.get("/tasks", summary="ListTasks", responses={200: {"model": TesListTasksResponse}})
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
        body: dict[str, Any] = {"tasks": [task_view(r, view) for r in records]}
        if token:
            body["next_page_token"] = token
        return _json(body)

    @router.get("/tasks/{task_id}", summary="GetTask", responses={200: {"model": TesTask}})
    async def get_task(acc: Acc, task_id: str, view: View = View.MINIMAL) -> Response:
        return _json(task_view(await acc.job(task_id), view))

    return router
