"""Translating between jobgate's jobs and a remote server's TES tasks (pure functions)."""

from __future__ import annotations

from typing import Any

from jobgate.backends.base import BackendStatus
from jobgate.domain.models import ExecutorLog, Job, OutputFileLog, TaskSpec
from jobgate.domain.states import State

JOB_TAG = "jobgate.job"
"""Tag naming the gateway's job id on the remote task (found again after a lost reply)."""
GATEWAY_TAG = "jobgate.gateway"
"""Tag naming the gateway that created the task (its batched status reads filter on it)."""

FINAL_STATES = {
    "COMPLETE": State.COMPLETE,
    "EXECUTOR_ERROR": State.EXECUTOR_ERROR,
    "SYSTEM_ERROR": State.SYSTEM_ERROR,
    "CANCELED": State.CANCELED,
    "PREEMPTED": State.PREEMPTED,
}
_ACTIVE_STATES = {
    "QUEUED": State.QUEUED,
    "INITIALIZING": State.QUEUED,
    "PAUSED": State.QUEUED,
    "UNKNOWN": State.QUEUED,
    "RUNNING": State.RUNNING,
    "CANCELING": State.RUNNING,
}
_SPEC_FIELDS = set(TaskSpec.model_fields)


def remote_task(job: Job, gateway: str) -> dict[str, Any]:
    """The TES task to create for ``job``: its spec, tagged with the job and gateway ids;
    the gateway's own routing key (``backend_parameters.backend``) is not passed on."""
    task = job.model_dump(mode="json", exclude_none=True, include=_SPEC_FIELDS)
    res = task.get("resources")
    if isinstance(res, dict):
        params = {k: v for k, v in (res.get("backend_parameters") or {}).items() if k != "backend"}
        if params:
            res["backend_parameters"] = params
        else:
            res.pop("backend_parameters", None)
            res.pop("backend_parameters_strict", None)
    task["tags"] = {**(task.get("tags") or {}), JOB_TAG: job.id, GATEWAY_TAG: gateway}
    return task


def active_status(remote_state: str, service: str) -> BackendStatus:
    """A non-final remote state as the gateway shows it."""
    state = _ACTIVE_STATES.get(remote_state, State.QUEUED)
    return BackendStatus(state, detail=f"{remote_state} at {service}")


def is_final(remote_state: str) -> bool:
    return remote_state in FINAL_STATES


def final_status(task: dict[str, Any], service: str, url: str) -> BackendStatus:
    """A final remote task (view FULL) as a status: its last attempt's executor logs,
    outputs and system logs, its id and service in the metadata."""
    remote_state = str(task.get("state"))
    state = FINAL_STATES.get(remote_state, State.SYSTEM_ERROR)
    logs = task.get("logs") or []
    last = logs[-1] if logs and isinstance(logs[-1], dict) else {}
    executor_logs = []
    for entry in last.get("logs") or []:
        if isinstance(entry, dict):
            executor_logs.append(
                ExecutorLog(
                    start_time=_text(entry.get("start_time")),
                    end_time=_text(entry.get("end_time")),
                    stdout=_text(entry.get("stdout")),
                    stderr=_text(entry.get("stderr")),
                    exit_code=_int(entry.get("exit_code")),
                )
            )
    outputs = []
    for out in last.get("outputs") or []:
        if isinstance(out, dict) and out.get("url") and out.get("path"):
            outputs.append(
                OutputFileLog(
                    url=str(out["url"]),
                    path=str(out["path"]),
                    size_bytes=str(out.get("size_bytes") or "0"),
                )
            )
    system_logs = [f"{service}: {line}" for line in last.get("system_logs") or []]
    metadata = {
        f"remote.{k}": str(v)
        for k, v in (last.get("metadata") or {}).items()
        if isinstance(k, str) and not isinstance(v, dict | list)
    }
    metadata.update(remote_metadata(str(task.get("id")), service, url))
    if state == State.SYSTEM_ERROR and remote_state != "SYSTEM_ERROR":
        system_logs.append(f"{service} reported state {remote_state!r}")
    return BackendStatus(
        state,
        executor_logs=executor_logs,
        system_logs=system_logs,
        metadata=metadata,
        outputs=outputs,
        detail=f"{remote_state.lower()} at {service}",
    )


def remote_metadata(remote_id: str, service: str, url: str) -> dict[str, str]:
    return {"remote_id": remote_id, "remote_backend": service, "remote_service": url}


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError):
        return -1
