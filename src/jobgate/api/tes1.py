"""TES 1.0 documents for the clients of the ``/v1`` prefix (py-tes 0.4, Toil, Snakemake).

Those clients build strict models from every response: a state or a field TES 1.0 (as
py-tes 0.4.2 models it) does not have makes them raise. So on ``/v1`` tasks keep only
the 1.0 fields, and the states 1.1 added are shown as the 1.0 state that tells a client
the same thing about what it must do next (wait, or stop waiting):

- ``CANCELING`` → ``RUNNING``: the task is still active (its processes are being stopped,
  or its scheduler is dequeuing it); a 1.0 client keeps polling until ``CANCELED``.
  Showing ``CANCELED`` early would tell it the task's files are free while an executor
  may still write them.
- ``PAUSED`` → ``QUEUED``: held, it has not started and will run once released.
- ``PREEMPTED`` → ``SYSTEM_ERROR``: final, and not caused by the task's own command.

Requests are not narrowed: a 1.0 client sends a subset of 1.1 already.
"""

from __future__ import annotations

from typing import Any

from jobgate.domain.states import State

STATES: dict[str, str] = {
    State.CANCELING.value: State.RUNNING.value,
    State.PAUSED.value: State.QUEUED.value,
    State.PREEMPTED.value: State.SYSTEM_ERROR.value,
}
"""1.1 states 1.0 clients do not know, and what they are shown instead."""

SPEC_FIELDS = (
    "name",
    "description",
    "inputs",
    "outputs",
    "resources",
    "executors",
    "volumes",
    "tags",
)
"""Fields of tesTask a stored spec may hold, in 1.0 and 1.1 (the native API stores more)."""

_TASK = frozenset({"id", "state", *SPEC_FIELDS, "logs", "creation_time"})
_INPUT = frozenset({"url", "path", "type", "name", "description", "content"})
_OUTPUT = frozenset({"url", "path", "type", "name", "description"})
_RESOURCES = frozenset({"cpu_cores", "ram_gb", "disk_gb", "preemptible", "zones"})
_EXECUTOR = frozenset({"image", "command", "workdir", "stdin", "stdout", "stderr", "env"})
_TASK_LOG = frozenset({"start_time", "end_time", "metadata", "logs", "outputs", "system_logs"})
_EXECUTOR_LOG = frozenset({"start_time", "end_time", "stdout", "stderr", "exit_code"})
_OUTPUT_LOG = frozenset({"url", "path", "size_bytes"})


def state(value: str) -> str:
    """The TES 1.0 state shown for the stored state ``value``."""
    return STATES.get(value, value)


def _keep(doc: dict[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k in keys}


def _each(items: Any, keys: frozenset[str]) -> list[dict[str, Any]]:
    return [_keep(item, keys) for item in items or []]


def task(doc: dict[str, Any]) -> dict[str, Any]:
    """The TES 1.0 form of the tesTask document ``doc`` (any view)."""
    out = _keep(doc, _TASK)
    out["state"] = state(out["state"])
    if "inputs" in out:
        out["inputs"] = _each(out["inputs"], _INPUT)
    if "outputs" in out:
        out["outputs"] = _each(out["outputs"], _OUTPUT)
    if "executors" in out:
        out["executors"] = _each(out["executors"], _EXECUTOR)
    if isinstance(out.get("resources"), dict):
        out["resources"] = _keep(out["resources"], _RESOURCES)
    if "logs" in out:
        logs = []
        for log in out["logs"] or []:
            entry = _keep(log, _TASK_LOG)
            if "logs" in entry:
                entry["logs"] = _each(entry["logs"], _EXECUTOR_LOG)
            if "outputs" in entry:
                entry["outputs"] = _each(entry["outputs"], _OUTPUT_LOG)
            logs.append(entry)
        out["logs"] = logs
    return out


def service_info(name: str, doc: str, storage: list[str]) -> dict[str, Any]:
    """``GET /v1/tasks/service-info`` in the 1.0 shape: exactly ``name``, ``doc`` and
    ``storage`` (URL prefixes; Toil mounts its job store only when one of them is a
    prefix of the store's ``file://`` URL)."""
    return {"name": name, "doc": doc, "storage": storage}
