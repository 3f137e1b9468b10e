"""Use cases of the DiracX jobs router: JDL jobs onto native jobs, DiracX searches and
statuses onto jobgate's store and state machine.

A DiracX JobID is the job's ``seq`` (an integer that never repeats). A JDL becomes one
native job: ``Executable`` and ``Arguments`` run with ``/bin/sh`` in the job's ``/work``
directory (where the input sandboxes are extracted), ``StdOutput``/``StdError`` redirect
there, ``OutputSandbox`` names files under it, ``CPUTime`` (seconds) is kept as a label,
``NumberOfProcessors`` is ``cpu_cores``, ``Priority`` the priority, ``JobName`` the name;
``JobGroup``, ``JobType``, ``Site``, ``OwnerGroup``, ``VO``, ``Tags``, ``InputData`` and
every other attribute are kept as labels (strings; lists joined with ``,``).
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jobgate.domain import diracx as dx
from jobgate.domain import limits as lim
from jobgate.domain.jdl import Jdl, JdlError, expand, parse
from jobgate.domain.models import JobRecord, new_job_id, rfc3339
from jobgate.domain.states import FINAL, State
from jobgate.errors import Conflict, Forbidden, InvalidRequest, JobgateError
from jobgate.service.native import NativeJobs, Submitter
from jobgate.store.diracx import Cond, DiracxQueries
from jobgate.store.visibility import Scope

WORKDIR = "/work"
KILL_PATIENCE = 10.0
"""Seconds a delete waits for a running job to be killed."""

SANDBOX_PFN = re.compile(
    r"^(?:SB:[A-Za-z0-9_.-]+\|)?/S3/[A-Za-z0-9_.\-/]*sha256:([0-9a-f]{64})\.(tar\.bz2|tar\.zst|tar\.gz)$"
)
"""A sandbox PFN as this router hands them out (and DiracX's client passes back)."""
SANDBOX_SE = "jobgate"


def sandbox_pfn(sha: str, fmt: str) -> str:
    """The PFN naming sandbox ``sha`` (its ``fmt`` is the archive format the client gave)."""
    return f"SB:{SANDBOX_SE}|/S3/sandboxes/sha256:{sha}.{fmt}"


# Attributes that become parts of the native job rather than labels.
_MAPPED = {
    "executable",
    "arguments",
    "stdoutput",
    "stderror",
    "inputsandbox",
    "outputsandbox",
    "numberofprocessors",
    "priority",
    "jobname",
    "parameter",
    "parameterindex",
}


def sandbox_sha(pfn: str) -> str | None:
    m = SANDBOX_PFN.match(pfn)
    return None if m is None else m.group(1)


def _label_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_label_text(v) for v in value)
    return str(value)


def _strings(jdl: Jdl, name: str) -> list[str]:
    value = jdl.get(name)
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in items):
        raise JdlError(
            "must be a string or a list of strings", line=jdl.line_of(name), attribute=name
        )
    return [v for v in items if v]


def _file_name(jdl: Jdl, name: str, value: str) -> str:
    if value.startswith("/") or ".." in value.split("/") or "\x00" in value or not value:
        raise JdlError(
            f"{value!r} must be a relative path inside the job's directory",
            line=jdl.line_of(name),
            attribute=name,
        )
    return value


def job_request(jdl: Jdl, owner: str | None) -> dict[str, Any]:
    """The native job (a ``JobRequest`` body) a parsed JDL describes; JdlError if it cannot."""
    exe = jdl.get("Executable")
    if not isinstance(exe, str) or not exe:
        raise JdlError(
            "a job needs an Executable (a string)",
            line=jdl.line_of("Executable"),
            attribute="Executable",
        )
    args = jdl.get("Arguments", "")
    if not isinstance(args, str | int | float) or isinstance(args, bool):
        raise JdlError("must be a string", line=jdl.line_of("Arguments"), attribute="Arguments")
    stdout = jdl.get("StdOutput")
    stderr = jdl.get("StdError")
    work = f'"${{JOBGATE_TASK_ROOT:-}}{WORKDIR}"'
    script = [f"mkdir -p {work} && cd {work} || exit 1"]
    # An executable shipped in the input sandbox is run from the work directory.
    script.append(f"e={shlex.quote(exe)}")
    script.append('case "$e" in */*) ;; *) [ -f "$e" ] && e="./$e" ;; esac')
    script.append('[ -f "$e" ] && [ ! -x "$e" ] && chmod u+x "$e"')
    line = f'exec "$e" {args}' if str(args) else 'exec "$e"'
    for attr, stream, value in (("StdOutput", ">", stdout), ("StdError", "2>", stderr)):
        if value is None:
            continue
        if not isinstance(value, str):
            raise JdlError("must be a file name", line=jdl.line_of(attr), attribute=attr)
        line += f" {stream}{shlex.quote(_file_name(jdl, attr, value))}"
    script.append(line)
    job: dict[str, Any] = {"script": "\n".join(script)}
    name = jdl.get("JobName")
    if name is not None:
        job["name"] = _label_text(name)[: lim.NAME]
    inputs = []
    for pfn in _strings(jdl, "InputSandbox"):
        sha = sandbox_sha(pfn)
        if sha is None:
            raise JdlError(
                f"{pfn!r} is not a sandbox of this service: upload the files first "
                "(POST /api/jobs/sandbox) and list the PFN it answers",
                line=jdl.line_of("InputSandbox"),
                attribute="InputSandbox",
            )
        inputs.append({"url": f"sandbox:{sha}", "path": WORKDIR, "type": "DIRECTORY"})
    if inputs:
        job["inputs"] = inputs
    outputs = []
    for entry in _strings(jdl, "OutputSandbox"):
        if entry.upper().startswith("LFN:"):
            raise JdlError(
                "LFN: outputs need a DIRAC file catalog, which this service has not",
                line=jdl.line_of("OutputSandbox"),
                attribute="OutputSandbox",
            )
        outputs.append(f"{WORKDIR}/{_file_name(jdl, 'OutputSandbox', entry)}")
    if outputs:
        job["output_sandbox"] = outputs
    procs = jdl.get("NumberOfProcessors")
    if procs is not None:
        if isinstance(procs, bool) or not isinstance(procs, int) or procs < 1:
            raise JdlError(
                "must be a positive integer",
                line=jdl.line_of("NumberOfProcessors"),
                attribute="NumberOfProcessors",
            )
        job["resources"] = {"cpu_cores": procs}
    priority = jdl.get("Priority")
    if priority is not None:
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise JdlError("must be an integer", line=jdl.line_of("Priority"), attribute="Priority")
        job["priority"] = priority
    labels: dict[str, str] = {}
    for key, value in jdl.attributes.items():
        lower = key.lower()
        if lower in _MAPPED:
            continue
        if lower == "owner" and value != owner:
            raise Forbidden(
                "a job is owned by whoever submits it",
                errors=[
                    {
                        "where": f"jdl: attribute {key}, line {jdl.lines[key]}",
                        "what": "jobs may not be submitted on another's behalf",
                    }
                ],
            )
        labels[key] = _label_text(value)[: lim.TAG_VALUE]
    for key in ("Parameter", "ParameterIndex"):
        if key in jdl:
            labels[key] = _label_text(jdl.get(key))
    labels.setdefault("JobType", "User")
    job["labels"] = labels
    return job


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One DiracX status update of one job."""

    status: str | None
    minor_status: str | None
    application_status: str | None
    source: str


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat()


def render(row: dict[str, Any], parameters: Sequence[str]) -> dict[str, Any]:
    """A job as DiracX's search shows it, with the chosen ``parameters``."""
    state = State(row["state"])
    labels = row["labels"]
    values: dict[str, Any] = {
        "JobID": row["seq"],
        "Status": "Stalled" if state == State.RUNNING and row["stalled"] else dx.STATUS_OF[state],
        "MinorStatus": dx.minor_status(state, row["detail"]),
        "ApplicationStatus": row["app_status"] or "Unknown",
        "Owner": row["owner"],
        "JobName": row["name"],
        "SubmissionTime": _iso(row["created_at"]),
        "LastUpdateTime": _iso(row["updated_at"]),
        "UserPriority": row["priority"],
        "RescheduleCounter": row["reschedules"],
        "StartExecTime": None if row["started_at"] is None else _iso(row["started_at"]),
        "EndExecTime": None if row["ended_at"] is None else _iso(row["ended_at"]),
        "HeartBeatTime": None if row["heartbeat_at"] is None else _iso(row["heartbeat_at"]),
    }
    out = {}
    for p in parameters:
        if p in values:
            out[p] = values[p]
        else:
            out[p] = labels.get(p)
    return out


class DiracxJobs:
    """The DiracX router's use cases over :class:`NativeJobs`."""

    def __init__(self, native: NativeJobs, *, max_jobs: int) -> None:
        self.native = native
        self.queries = DiracxQueries(native.store.db)
        self.max_jobs = max_jobs

    # -- submission --------------------------------------------------------------------

    def expand_all(self, texts: Sequence[str], owner: str | None) -> list[dict[str, Any]]:
        """The native jobs of ``texts``; InvalidRequest naming the JDL, attribute and line."""
        if not texts:
            raise InvalidRequest(
                "no JDL given", errors=[{"where": "body", "what": "a non-empty list of JDLs"}]
            )
        jobs: list[dict[str, Any]] = []
        for i, text in enumerate(texts):
            try:
                jdl = parse(text)
                expanded = expand(jdl, self.max_jobs)
                if len(expanded) > 1 and len(texts) > 1:
                    raise JdlError(
                        "parametric jobs are submitted one JDL at a time, not in bulk",
                        line=jdl.line_of("Parameters"),
                        attribute="Parameters",
                    )
                jobs += [job_request(j, owner) for j in expanded]
            except JdlError as exc:
                raise InvalidRequest(
                    f"JDL {i}: {exc}", errors=[{"where": f"body[{i}]", "what": str(exc)}]
                ) from exc
            if len(jobs) > self.max_jobs:
                what = f"at most {self.max_jobs} jobs in one submission"
                raise InvalidRequest(what, errors=[{"where": "body", "what": what}])
        return jobs

    async def submit(self, texts: Sequence[str], submitter: Submitter) -> list[dict[str, Any]]:
        """Submit every JDL's jobs in one transaction; DiracX's InsertedJob for each."""
        items = self.expand_all(texts, submitter.owner)
        # The jobs of one call share a native group (as bulk and parametric jobs do).
        group = new_job_id() if len(items) > 1 else None
        results = await self.native.submit_many(items, owner=submitter, group_id=group)
        errors = [r.error for r in results if r.error is not None]
        if errors:
            first = errors[0]
            raise InvalidRequest(
                f"a JDL does not make a valid job: {first.message}", errors=first.errors
            )
        ids = [r.id for r in results if r.id is not None]
        seqs = await self.queries.seqs_of(ids)
        now = _iso(datetime.now(UTC))
        return [
            {
                "JobID": seqs[job_id],
                "Status": dx.STATUS_OF[State.QUEUED],
                "MinorStatus": "Job accepted",
                "TimeStamp": now,
            }
            for job_id in ids
        ]

    # -- reading -----------------------------------------------------------------------

    async def search(
        self, params: dx.SearchParams, *, page: int, per_page: int, scope: Scope
    ) -> tuple[int, list[dict[str, Any]]]:
        conds = conditions(params.search)
        sort = []
        for i, s in enumerate(params.sort):
            column = dx.COLUMN_OF.get(s.parameter)
            if column is None:
                raise InvalidRequest(
                    "invalid sort",
                    errors=[
                        {
                            "where": f"body.sort[{i}].parameter",
                            "what": f"cannot sort by {s.parameter!r}; one of "
                            f"{', '.join(dx.COLUMN_OF)}",
                        }
                    ],
                )
            sort.append((column, s.direction))
        total, rows = await self.queries.page(
            conds, sort, offset=(page - 1) * per_page, limit=per_page, scope=scope
        )
        parameters = params.parameters or list(dx.DEFAULT_PARAMETERS)
        items = [render(r, parameters) for r in rows]
        if params.distinct:
            unique: dict[str, dict[str, Any]] = {}
            for item in items:
                unique.setdefault(json.dumps(item, sort_keys=True, default=str), item)
            items = list(unique.values())
        return total, items

    async def summary(self, params: dx.SummaryParams, *, scope: Scope) -> list[dict[str, Any]]:
        conds = conditions(params.search)
        group = [(dx.COLUMN_OF.get(g), None if g in dx.COLUMN_OF else g) for g in params.grouping]
        rows = await self.queries.summary(group, conds, scope)
        # A DiracX status groups several jobgate states: add their counts up.
        merged: dict[tuple[Any, ...], int] = {}
        for row in rows:
            key = []
            for i, g in enumerate(params.grouping):
                v = row[f"_g{i}"]
                if g == "Status":
                    v = dx.STATUS_OF[State(v)]
                elif isinstance(v, datetime):
                    v = _iso(v if v.tzinfo else v.replace(tzinfo=UTC))
                key.append(v)
            merged[tuple(key)] = merged.get(tuple(key), 0) + row["count"]
        out = [
            {**dict(zip(params.grouping, key, strict=True)), "count": n}
            for key, n in merged.items()
        ]
        out.sort(key=lambda r: -int(r["count"]))
        return out

    async def ids_of(self, seqs: Sequence[int]) -> dict[int, str]:
        return await self.queries.ids_of(seqs)

    # -- control -----------------------------------------------------------------------

    async def change_status(self, job_id: str, change: StatusChange) -> dict[str, Any]:
        """Apply one DiracX status change; the SetJobStatusReturn success entry, or raise
        JobgateError saying why the change is refused."""
        if change.status is not None:
            await self._move(job_id, change.status)
        if change.application_status is not None:
            await self.native.patch(job_id, app_status=change.application_status)
        rec = await self.native.get(job_id)
        return {
            "Status": dx.STATUS_OF[rec.state],
            "MinorStatus": dx.minor_status(rec.state, rec.detail),
            "ApplicationStatus": rec.app_status or "Unknown",
            "LastUpdateTime": rfc3339(rec.updated_at or rec.created_at),
        }

    async def _move(self, job_id: str, status: str) -> None:
        rec = await self.native.get(job_id)
        if dx.STATUS_OF[rec.state] == status:
            return
        if status == "Killed":
            await self.native.cancel(job_id)
        elif status == "Deleted":
            await self.delete(job_id)
        elif status == "Waiting" and rec.state == State.PAUSED:
            await self.native.start(job_id)
        elif status in ("Waiting", "Received", "Rescheduled") and rec.state in FINAL:
            await self.native.reschedule(job_id)
        else:
            raise InvalidRequest(
                f"cannot set job to {status}: jobgate runs the job and sets "
                f"{', '.join(sorted(set(dx.STATUS_OF.values()) - {'Killed'}))} itself; "
                "clients may set Killed, Deleted, and Waiting or Rescheduled (to run it again)",
                errors=[{"where": "body.Status", "what": f"{status} cannot be set here"}],
            )

    async def reschedule(self, job_id: str, *, reset: bool = False) -> JobRecord:
        """Run a failed or killed job again; ``reset`` first sets its count of reschedules
        back to zero (DiracX's ``reset_jobs``), so the limit applies afresh."""
        if reset:
            rec = await self.native.get(job_id)
            if rec.state in FINAL:
                await self.native.store.update_in(job_id, rec.state, reschedules=0)
        await self.native.reschedule(job_id)
        return await self.native.get(job_id)

    async def delete(self, job_id: str) -> None:
        """Kill the job if it still runs, then delete it with its data (a deleted job is
        gone from jobgate, where DiracX keeps it with status Deleted)."""
        rec = await self.native.get(job_id)
        if rec.state not in FINAL and rec.state != State.PAUSED:
            await self.native.cancel(job_id)
            # A running job is CANCELING until its processes are gone: wait for that.
            deadline = time.monotonic() + KILL_PATIENCE
            while (rec := await self.native.get(job_id)).state not in FINAL:
                if time.monotonic() > deadline:
                    raise Conflict(f"job {job_id} is still being killed; delete it once Killed")
                await asyncio.sleep(0.05)
        await self.native.delete(job_id)

    async def set_metadata(self, job_id: str, values: dict[str, Any]) -> None:
        """Set job attributes: UserPriority is the priority, ApplicationStatus the
        application status, every other attribute a label."""
        priority = values.pop("UserPriority", None)
        app_status = values.pop("ApplicationStatus", None)
        for ro in ("JobID", "Status", "MinorStatus", "Owner"):
            if ro in values:
                raise InvalidRequest(
                    "invalid metadata",
                    errors=[{"where": f"body.{ro}", "what": f"{ro} cannot be set as metadata"}],
                )
        if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
            raise InvalidRequest(
                "invalid metadata",
                errors=[{"where": "body.UserPriority", "what": "must be an integer"}],
            )
        for key in values:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_().]{0,255}", key):
                raise InvalidRequest(
                    "invalid metadata",
                    errors=[{"where": f"body.{key[:64]}", "what": "not an attribute name"}],
                )
        labels: dict[str, str | None] = {
            k: None if v is None else _label_text(v)[: lim.TAG_VALUE] for k, v in values.items()
        }
        await self.native.patch(
            job_id,
            priority=priority,
            labels=labels or None,
            app_status=None if app_status is None else str(app_status),
        )


def conditions(specs: Sequence[dx.SearchSpec]) -> list[Cond]:
    """DiracX search conditions as store conditions; InvalidRequest naming the bad one."""
    out = []
    for i, s in enumerate(specs):
        where = f"body.search[{i}]"
        values: tuple[Any, ...] = tuple(s.values or []) if s.values is not None else (s.value,)
        op = s.operator.replace(" ", "_")
        if op == "regex":
            raise InvalidRequest(
                "invalid search",
                errors=[{"where": f"{where}.operator", "what": "'regex' is not supported here"}],
            )
        column = dx.COLUMN_OF.get(s.parameter)
        if s.parameter == "Status":
            if op not in ("eq", "neq", "in", "not_in"):
                raise InvalidRequest(
                    "invalid search",
                    errors=[
                        {"where": f"{where}.operator", "what": "Status takes eq, neq, in, not in"}
                    ],
                )
            states = tuple(st.value for v in values for st in dx.states_of(str(v)))
            op = "not_in" if op in ("neq", "not_in") else "in"
            out.append(Cond(op, states, column="state"))
            continue
        if column in ("seq", "priority", "reschedules"):
            try:
                values = tuple(int(v) for v in values)
                if not all(-(2**63) <= v < 2**63 for v in values):
                    raise ValueError("beyond 64 bits")
            except (TypeError, ValueError):
                raise InvalidRequest(
                    "invalid search",
                    errors=[{"where": f"{where}.value", "what": f"{s.parameter} is an integer"}],
                ) from None
            if op in ("like", "not_like"):
                raise InvalidRequest(
                    "invalid search",
                    errors=[{"where": f"{where}.operator", "what": f"{s.parameter} is a number"}],
                )
        elif column in ("created_at", "updated_at"):
            try:
                values = tuple(_time(str(v)) for v in values)
            except ValueError:
                raise InvalidRequest(
                    "invalid search",
                    errors=[{"where": f"{where}.value", "what": "not an ISO 8601 time"}],
                ) from None
        else:
            values = tuple(str(v) for v in values)
        out.append(Cond(op, values, column=column, label=None if column else s.parameter))
    return out


def _time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def failure(exc: JobgateError) -> dict[str, str]:
    """A SetJobStatusReturn ``failed`` entry."""
    return {"Status": exc.message}
