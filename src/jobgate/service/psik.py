"""psik_api's use cases over the native jobs engine: submit a psik ``PsikJobSpec``, read a
job's psik status history, list, start, cancel, read logs and working-directory files,
and render psik's callback webhook.

A psik job is a native job with one executor running the job's ``script`` from the file
:data:`SCRIPT_PATH` in the working directory :data:`WORKDIR`: a script that starts with
``#!`` runs under the interpreter it names (as the kernel would run it: the interpreter,
its one optional argument, the script's path); any other script under the configured
shell (``JOBGATE_PSIK_SHELL``, default ``/usr/bin/env rc``, as psik runs scripts
without ``#!``).
Files uploaded into a held job land in the working directory.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import PrivateAttr, ValidationError

from jobgate.auth.secrets import SecretBox
from jobgate.domain import limits as lim
from jobgate.domain.models import JobEvent, JobRecord
from jobgate.domain.native import DEFAULT_IMAGE, JobRequest
from jobgate.domain.psik import (
    JOBGATE_STATES,
    PSIK_STATE,
    PsikCallback,
    PsikJobSpec,
    PsikState,
    PsikStepInfo,
    current,
    history,
    jobndx,
    step,
)
from jobgate.domain.states import FINAL, RESCHEDULABLE, State
from jobgate.errors import Conflict, InvalidRequest, NotFound
from jobgate.service.logs import JobLogs
from jobgate.service.native import NativeJobs, Submitter, validation_errors
from jobgate.service.uploads import upload_path
from jobgate.service.webhooks import sign
from jobgate.store.visibility import Scope
from jobgate.store.webhooks import Target

WORKDIR = "/work"
"""The job's working directory (psik's ``JobSpec.directory``) inside the sandbox."""
SCRIPT_PATH = "/.psik/run"
"""Where the job's script is, inside the sandbox (psik's ``scripts/run``)."""
PSIK_KEY = "_psik"
"""Stored-spec key of what only this dialect reads (the psik backend name)."""
HOOK_KEY = "_hook"
"""Stored-spec key the webhook sender reads a callback's format (and sealed secret) from."""
FORMAT = "psik"
SIGNATURE_HEADER = "x-hub-signature-256"
LOG_BYTES = 4 * 1024 * 1024
"""The most of each log ``GET /jobs/{id}/logs`` returns (the end of it)."""
MAX_LISTED = 10_000
"""Jobs a listing without ``limit`` returns at most."""
_PAGE = 256

# Where a problem in the translated job is, in the psik body the client sent.
_WHERE = {
    "body.resources.backend_parameters.partition": "body.backend.queue_name",
    "body.resources.backend_parameters.account": "body.backend.project_name",
    "body.resources.backend_parameters.reservation": "body.backend.reservation_id",
    "body.resources.backend_parameters.time": "body.resources.duration",
    "body.resources.backend_parameters.nodes": "body.resources.node_count",
    "body.resources.backend_parameters.ntasks": "body.resources.process_count",
    "body.resources.backend_parameters.gres": "body.resources.gpu_cores_per_process",
    "body.executors[0].env": "body.environment",
    "body.executors": "body.script",
    "body.inputs": "body.script",
}


class PsikRequest(JobRequest):
    """A native job translated from a psik ``PsikJobSpec``, with the dialect's stored keys."""

    _extra: dict[str, Any] = PrivateAttr(default_factory=dict)

    def task_spec(self) -> dict[str, Any]:
        return {**super().task_spec(), **self._extra}


def interpreter(script: str, shell: str) -> list[str]:
    """The argv before the script's path: its ``#!`` line's, else ``shell``'s."""
    if script.startswith("#!"):
        line = script[2:].split("\n", 1)[0].strip()
        program, _, arg = line.partition(" ")
        if not program:
            raise InvalidRequest(
                "invalid job",
                errors=[{"where": "body.script", "what": "the #! line names no interpreter"}],
            )
        # The kernel passes the rest of the line as one argument.
        return [program, arg.strip()] if arg.strip() else [program]
    return shlex.split(shell)


def prepared(script: str, shell: str) -> str:
    """The script as psik writes it to ``scripts/run``: a ``#!`` line first, a final newline."""
    if not script.startswith("#!"):
        script = f"#!{shell}\n{script}"
    return script if script.endswith("\n") else script + "\n"


def _relocated(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for err in errors:
        where = str(err.get("where", ""))
        for ours, theirs in _WHERE.items():
            if where == ours or where.startswith(ours + ".") or where.startswith(ours + "["):
                where = theirs + where[len(ours) :] if where != ours else theirs
                break
        out.append({**err, "where": where})
    return out


class PsikJobs:
    """psik_api's operations; ``backends`` maps psik backend names to jobgate backends
    (an empty value: jobgate's default backend)."""

    def __init__(
        self,
        native: NativeJobs,
        *,
        logs: JobLogs,
        secrets: SecretBox,
        backends: Mapping[str, str],
        shell: str = "/usr/bin/env rc",
    ) -> None:
        self.native = native
        self.job_logs = logs
        self.secrets = secrets
        default = native.jobs.default_backend
        self.backends = {name: target or default for name, target in backends.items()}
        self.shell = shell

    # -- backends ----------------------------------------------------------------------

    def backend(self, name: str | None) -> tuple[str, str]:
        """(psik name, jobgate backend) of ``name``; the first configured one for None."""
        if name is None:
            if not self.backends:
                raise NotFound("no psik backends are configured (JOBGATE_PSIK_BACKENDS)")
            name = next(iter(self.backends))
        target = self.backends.get(name)
        if target is None:
            raise NotFound(
                f"backend {name!r} not found",
                errors=[{"where": "query.backend", "what": f"configured: {sorted(self.backends)}"}],
            )
        if target not in self.native.jobs.backends:
            raise NotFound(f"psik backend {name!r} maps to {target!r}, which is not configured")
        return name, target

    def backend_of(self, rec: JobRecord) -> str | None:
        """The psik backend a job is on: the one it was submitted to, else the first whose
        jobgate backend it runs on (jobs submitted through other APIs)."""
        own = rec.spec.get(PSIK_KEY)
        if isinstance(own, dict) and isinstance(own.get("backend"), str):
            return str(own["backend"])
        return next((n for n, t in self.backends.items() if t == rec.backend), None)

    # -- submission --------------------------------------------------------------------

    def request(self, spec: PsikJobSpec, backend: str, *, hold: bool) -> PsikRequest:
        """The native job that runs ``spec`` on the psik backend ``backend``."""
        name, target = self.backend(backend)
        res = spec.resources
        params: dict[str, str] = {"time": str(res.duration)}
        if res.node_count is not None:
            params["nodes"] = str(res.node_count)
        if res.process_count is not None:
            params["ntasks"] = str(res.process_count)
        if res.gpu_cores_per_process:
            per_node = res.processes_per_node or res.processes
            params["gres"] = f"gpu:{res.gpu_cores_per_process * per_node}"
        for key, value in (
            ("partition", spec.backend.queue_name),
            ("account", spec.backend.project_name),
            ("reservation", spec.backend.reservation_id),
        ):
            if value is not None:
                params[key] = value
        env = {**spec.environment, "nodes": str(res.node_count or 1), "jobndx": "1"}
        body: dict[str, Any] = {
            "name": spec.name,
            "executors": [
                {
                    "image": DEFAULT_IMAGE,
                    "command": [*interpreter(spec.script, self.shell), SCRIPT_PATH],
                    "workdir": WORKDIR,
                    "env": env,
                }
            ],
            "inputs": [{"path": SCRIPT_PATH, "content": prepared(spec.script, self.shell)}],
            "resources": {
                "cpu_cores": min(res.processes * res.cpu_cores_per_process, lim.CPU_CORES),
                "backend_parameters": params,
            },
            "backend": target,
            "hold": hold,
        }
        if spec.callback is not None:
            body["callback"] = spec.callback
        try:
            req = PsikRequest.model_validate({k: v for k, v in body.items() if v is not None})
        except ValidationError as exc:
            raise InvalidRequest(
                "invalid job", errors=_relocated(validation_errors(exc, "body"))
            ) from None
        extra: dict[str, Any] = {PSIK_KEY: {"backend": name}}
        if spec.callback is not None:
            hook: dict[str, str] = {"format": FORMAT}
            if spec.cb_secret is not None and spec.cb_secret.get_secret_value():
                hook["secret"] = self.secrets.encrypt(spec.cb_secret.get_secret_value())
            extra[HOOK_KEY] = hook
        req._extra = extra
        return req

    async def submit(
        self, spec: PsikJobSpec, backend: str | None, *, hold: bool, owner: Submitter
    ) -> JobRecord:
        name, _target = self.backend(backend)
        req = self.request(spec, name, hold=hold)
        try:
            return await self.native.submit(req, owner=owner)
        except InvalidRequest as exc:
            raise InvalidRequest(exc.message, errors=_relocated(exc.errors)) from None

    # -- reading -----------------------------------------------------------------------

    async def history(self, rec: JobRecord) -> list[PsikStepInfo]:
        return history(rec, await self.native.store.events(rec.id))

    async def listing(
        self,
        visible: Scope,
        *,
        index: int = 0,
        limit: int | None = None,
        backend: str | None = None,
        state: PsikState | None = None,
    ) -> list[PsikStepInfo]:
        """The last status row of each visible job, newest first, from ``index`` on."""
        if backend is not None:
            self.backend(backend)
        wanted = index + (MAX_LISTED if limit is None else limit)
        states = JOBGATE_STATES[state] if state is not None else None
        out: list[PsikStepInfo] = []
        token = None
        while len(out) < wanted:
            records, token = await self.native.jobs.page(
                page_size=_PAGE, page_token=token, visible=visible
            )
            for rec in records:
                if states is not None and rec.state not in states:
                    continue
                if backend is not None and self.backend_of(rec) != backend:
                    continue
                out.append(current(rec))
            if token is None:
                break
        return out[index:wanted]

    async def logs(self, rec: JobRecord) -> dict[str, str]:
        """psik's ``log/`` files: ``stdout.N`` and ``stderr.N`` of the current submission N
        once the job has started (``.i`` added for executor i > 0 of non-psik jobs)."""
        started = rec.state in (State.RUNNING, State.CANCELING) or (
            rec.state in FINAL and bool(rec.logs)
        )
        if not started:
            return {}
        job = rec.to_job()
        ndx = jobndx(PsikState.active, rec.reschedules)
        out: dict[str, str] = {}
        for i in range(len(job.executors)):
            suffix = f".{i}" if i else ""
            for stream in ("stdout", "stderr"):
                out[f"{stream}.{ndx}{suffix}"] = await self.job_logs.tail(job, i, stream, LOG_BYTES)
        return out

    def scripts(self, rec: JobRecord) -> dict[str, str]:
        """psik's ``scripts/``: ``run``, the job's script as it runs (psik jobs only)."""
        for item in rec.spec.get("inputs") or []:
            if isinstance(item, dict) and item.get("path") == SCRIPT_PATH:
                return {"run": str(item.get("content") or "")}
        return {}

    def workdir(self, job_id: str) -> Path:
        """Where files uploaded into the job's working directory are kept."""
        return self.native.uploads_dir(job_id) / WORKDIR.strip("/")

    async def files(self, job_id: str, sub: str | None = None) -> dict[str, dict[str, int]]:
        """The entries of the working directory (or its subdirectory ``sub``) as psik lists
        them: ``{name: {size, atime, mtime}}``."""
        top = self.workdir(job_id)
        path = top / upload_path(sub) if sub else top
        return await asyncio.to_thread(_stat_dir, path)

    async def file(self, job_id: str, name: str) -> Path | dict[str, dict[str, int]]:
        """The uploaded file ``name`` (a path), or a directory's listing."""
        path = self.workdir(job_id) / upload_path(name)
        try:
            mode = (await asyncio.to_thread(path.lstat)).st_mode
        except FileNotFoundError:
            raise NotFound(f"file {name} not found") from None
        if stat.S_ISDIR(mode):
            return await asyncio.to_thread(_stat_dir, path)
        if not stat.S_ISREG(mode):
            raise NotFound(f"file {name} not found")
        return path

    # -- control -----------------------------------------------------------------------

    def check_held(self, rec: JobRecord) -> None:
        """Files go only into a job not started yet (409 otherwise: it would miss them)."""
        if rec.state != State.PAUSED:
            raise Conflict(
                f"job {rec.id} is {PSIK_STATE[rec.state].value} ({rec.state}): files can be "
                "uploaded only into a job created with POST /jobs/new, before it is started"
            )

    async def start(self, rec: JobRecord) -> State:
        """Start a held job; submit a failed or canceled one again (its next jobndx)."""
        if rec.state == State.PAUSED:
            return await self.native.start(rec.id)
        if rec.state in RESCHEDULABLE:
            return await self.native.reschedule(rec.id)
        raise Conflict(
            f"job {rec.id} is {rec.state}: only a held (new), failed or canceled job can be started"
        )

    async def cancel(self, job_id: str) -> State:
        return await self.native.cancel(job_id)


def _stat_dir(path: Path) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return out
    for entry in entries:
        st = entry.stat(follow_symlinks=False)
        out[entry.name] = {
            "size": int(st.st_size),
            "atime": int(st.st_atime),
            "mtime": int(st.st_mtime),
        }
    return out


class PsikCallbacks:
    """psik's callback webhook: the body ``{"jobid", "jobndx", "state", "info"}`` (psik's
    ``Callback``, compact JSON) POSTed at each change of psik state but ``new``, signed in
    ``x-hub-signature-256`` (``sha256=`` + HMAC-SHA256 of the body keyed with the job's
    ``cb_secret``) when the job has one. Delivered by :class:`~jobgate.service.webhooks.
    Webhooks` (retries, SSRF guard) like every callback."""

    def __init__(self, secrets: SecretBox) -> None:
        self.secrets = secrets

    def render(self, event: JobEvent, target: Target) -> tuple[bytes, dict[str, str]] | None:
        state = step(event)
        if state is None:
            return None
        body = PsikCallback(
            jobid=event.job_id, jobndx=jobndx(state, target.reschedules), state=state, info=0
        ).model_dump_json()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        sealed = (target.hook or {}).get("secret")
        if isinstance(sealed, str):
            secret = self.secrets.decrypt(sealed)
            if secret is not None:
                headers[SIGNATURE_HEADER] = sign(secret.encode(), body.encode())
        return body.encode(), headers
