"""SKA SRCNet worksteps (``/v1/worksteps``): a translator onto :class:`NativeJobs`.

A workstep is one container command at an SRCNet node. ``executable_entrypoint`` runs with
``/bin/sh -c``; a ``docker://`` prefix is dropped from ``container_image``;
``system_parameters.cpu_cores``/``memory_gb`` become the job's ``cpu_cores``/``ram_gb``;
``src_node`` picks the backend through ``JOBGATE_SRC_NODES`` (unset: every node runs on
the default backend). What SRCNet keeps beyond a job (``workflow_id``, ``input_data``,
``output_data``, ``provenance_json``, the request as sent) is stored with the job and
returned as it was given. A workstep id is a job id: the same job is visible under
``/api/v1/jobs/{id}`` and ``/ga4gh/tes/v1/tasks/{id}`` with its exact state.
"""

from __future__ import annotations

import shlex
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from jobgate.api import openapi
from jobgate.api.bodies import parse_body, validate
from jobgate.api.deps import Services, services
from jobgate.api.errors import answers
from jobgate.api.jobs import idempotent
from jobgate.api.security import Acc, submitter
from jobgate.domain import jsontext
from jobgate.domain import limits as lim
from jobgate.domain.models import JobEvent, JobRecord, rfc3339
from jobgate.domain.native import JobRequest
from jobgate.domain.states import State
from jobgate.errors import InvalidRequest, JobgateError

Svc = Annotated[Services, Depends(services)]
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]

SPEC_KEY = "srcnet"
"""Key of the stored job spec holding the workstep as submitted."""

STATES: dict[State, str] = {
    State.QUEUED: "queued",
    State.PAUSED: "held",
    State.INITIALIZING: "pending",
    State.RUNNING: "running",
    State.CANCELING: "cancelling",
    State.COMPLETE: "completed",
    State.EXECUTOR_ERROR: "failed",
    State.SYSTEM_ERROR: "failed",
    State.PREEMPTED: "failed",
    State.CANCELED: "cancelled",
    State.UNKNOWN: "unknown",
}
"""Job state → workstep state. ``pending``: claimed, inputs staging, the command starting."""


class SystemParameters(BaseModel):
    """Where and with what a workstep runs; unknown parameters are kept and echoed."""

    model_config = ConfigDict(extra="allow")

    src_node: list[lim.Text] = Field(default_factory=list, max_length=lim.ZONES)
    """Acceptable nodes; the workstep runs at the first. Every one must be configured."""
    cpu_cores: lim.Int | None = Field(default=None, ge=1, le=lim.CPU_CORES)
    memory_gb: float | None = Field(default=None, gt=0, le=lim.GB, allow_inf_nan=False)

    @field_validator("src_node", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class WorkstepRequest(BaseModel):
    """``POST /v1/worksteps``. Read-only fields a client echoes back (id, state…) are ignored."""

    model_config = ConfigDict(extra="ignore")

    container_image: str = Field(min_length=1, max_length=lim.IMAGE)
    executable_entrypoint: str = Field(min_length=1, max_length=lim.ARG)
    execution: lim.Text = "batch"
    system_parameters: SystemParameters = Field(default_factory=SystemParameters)
    workflow_id: lim.Text | None = None
    input_data: list[dict[str, Any]] | None = Field(default=None, max_length=lim.WORKSTEP_DATA)
    output_data: list[dict[str, Any]] | None = Field(default=None, max_length=lim.WORKSTEP_DATA)
    provenance_json: dict[str, Any] | None = None

    @field_validator("execution")
    @classmethod
    def _batch_only(cls, value: str) -> str:
        if value != "batch":
            raise ValueError(f"only 'batch' execution is supported, not {value!r}")
        return value


class _WorkstepJob(JobRequest):
    """A native job that also stores the workstep it came from (under :data:`SPEC_KEY`)."""

    workstep: dict[str, Any]

    def task_spec(self) -> dict[str, Any]:
        spec = super().task_spec()
        spec[SPEC_KEY] = self.workstep
        return spec


def node_backend(nodes: list[str], routes: dict[str, str], default: str) -> str:
    """The backend for a workstep asking for ``nodes``; a 400 naming any unknown node."""
    if not routes:
        return default
    unknown = [
        {
            "where": f"body.system_parameters.src_node[{i}]",
            "what": f"unknown SRCNet node {node!r}; this gateway serves {sorted(routes)}",
        }
        for i, node in enumerate(nodes)
        if node not in routes
    ]
    if unknown:
        raise InvalidRequest(unknown[0]["what"], errors=unknown)
    return routes[nodes[0]] if nodes else default


def to_job(ws: WorkstepRequest, backend: str) -> _WorkstepJob:
    params = ws.system_parameters
    labels = {"srcnet.node": params.src_node[0]} if params.src_node else {}
    if ws.workflow_id:
        labels["srcnet.workflow_id"] = ws.workflow_id
    resources = {"cpu_cores": params.cpu_cores, "ram_gb": params.memory_gb}
    return _WorkstepJob.model_validate(
        {
            "name": "workstep",
            "script": ws.executable_entrypoint,
            "image": ws.container_image.removeprefix("docker://"),
            "resources": {k: v for k, v in resources.items() if v is not None} or None,
            "backend": backend,
            "labels": labels or None,
            "workstep": ws.model_dump(mode="json", exclude_unset=True)
            | {"system_parameters": params.model_dump(mode="json", exclude_unset=True)},
        }
    )


def started_at(events: list[JobEvent]) -> str | None:
    """When the current run began RUNNING (None if it has not; a reschedule starts anew)."""
    start = None
    for e in events:
        if e.to_state == State.QUEUED:
            start = None
        elif e.to_state == State.RUNNING and start is None:
            start = e.at
    return rfc3339(start) if start else None


def as_of(rec: JobRecord, events: list[JobEvent]) -> list[JobEvent]:
    """The history up to ``rec``'s state: the events are read after the record, and the job
    may have moved on in between (a queued view must not show a start time)."""
    for i in range(len(events) - 1, -1, -1):
        if events[i].to_state == rec.state:
            return events[: i + 1]
    return events


def status_view(rec: JobRecord, events: list[JobEvent]) -> dict[str, Any]:
    """The SRCNet status document; jobs submitted through other APIs are shown as well."""
    events = as_of(rec, events)
    ws: dict[str, Any] = rec.spec.get(SPEC_KEY) or {}
    executor = (rec.spec.get("executors") or [{}])[0]
    resources = rec.spec.get("resources") or {}
    params = ws.get("system_parameters")
    if params is None:
        params = {"cpu_cores": resources.get("cpu_cores"), "memory_gb": resources.get("ram_gb")}
    return {
        "id": rec.id,
        "workflow_id": ws.get("workflow_id"),
        "created_by": rec.owner or "anonymous",
        "container_image": ws.get("container_image", executor.get("image")),
        "executable_entrypoint": ws.get(
            "executable_entrypoint",
            rec.spec.get("script") or shlex.join(executor.get("command") or []),
        ),
        "execution": ws.get("execution", "batch"),
        "system_parameters": params,
        "input_data": ws.get("input_data") or [],
        "output_data": ws.get("output_data") or [],
        "state": STATES[rec.state],
        "started_at": started_at(events),
        "provenance_json": ws.get("provenance_json") or {},
    }


def _parse(data: Any) -> WorkstepRequest:
    return validate(WorkstepRequest, data)


def make_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["SKA SRCNet worksteps"])

    @router.post(
        "/worksteps",
        summary="Submit a workstep",
        responses=answers(403, 409, 422, 429),
        openapi_extra=openapi.body(openapi.ref(WorkstepRequest)),
    )
    async def submit(request: Request, svc: Svc, acc: Acc, key: IdemKey = None) -> Response:
        who = await submitter(acc, svc)

        async def run() -> Response:
            ws = _parse(await parse_body(request))
            backend = node_backend(
                ws.system_parameters.src_node, svc.settings.src_nodes, svc.jobs.default_backend
            )
            if backend not in svc.backends:
                raise JobgateError(
                    f"SRCNet node {ws.system_parameters.src_node[0]!r} maps to backend "
                    f"{backend!r}, which this gateway does not run (check JOBGATE_SRC_NODES)"
                )
            rec = await svc.native.submit(to_job(ws, backend), owner=who)
            body = {"response_code": 200, "response_text": "Job submitted successfully."}
            return JSONResponse({**body, "id": rec.id})

        return await idempotent(svc, request, key, run)

    @router.get("/worksteps/{workstep_id}", summary="A workstep's status")
    async def get(workstep_id: str, svc: Svc, acc: Acc) -> Response:
        rec = await acc.job(workstep_id)
        body = status_view(rec, await svc.native.events(workstep_id))
        return Response(
            jsontext.dumps(body, separators=(",", ":"), ensure_ascii=False),
            media_type="application/json",
        )

    return router
