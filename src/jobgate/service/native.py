"""Use cases of the native jobs API: bulk and parametric submission, search, control."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from jobgate.backends.routing import ROUTED_KEY
from jobgate.domain.lifecycle import LIFECYCLE_KEY
from jobgate.domain.models import JobEvent, JobRecord, new_job_id
from jobgate.domain.native import (
    PLACEHOLDER,
    JobRequest,
    ParametricRequest,
    TooManyJobs,
    combinations,
    substitute,
)
from jobgate.domain.query import DEFAULT_FIELDS, SearchRequest, SummaryRequest
from jobgate.domain.states import FINAL, RESCHEDULABLE, State
from jobgate.errors import Conflict, InvalidRequest, JobgateError, JobNotFound
from jobgate.service.jobs import Decision, JobService, LifecycleFields
from jobgate.staging.guard import Guard
from jobgate.store import search as search_store
from jobgate.store.jobs import NewJob
from jobgate.store.visibility import Scope


def validation_errors(exc: ValidationError, prefix: str) -> list[dict[str, Any]]:
    """Pydantic errors as ``{where, what}`` items, located under ``prefix``."""
    out = []
    for err in exc.errors():
        where = prefix
        for part in err["loc"]:
            where += f"[{part}]" if isinstance(part, int) else f".{part}"
        out.append({"where": where, "what": str(err["msg"]).removeprefix("Value error, ")})
    return out


@dataclass(frozen=True, slots=True)
class Submitter:
    """Who submits: the owner recorded on new jobs, the group they are shared with, and the
    submitter's encrypted credential (kept only for backends that need one)."""

    owner: str | None = None
    share_group: str | None = None
    credential: str | None = field(default=None, repr=False)

    @classmethod
    def of(cls, value: Submitter | str | None) -> Submitter:
        return value if isinstance(value, Submitter) else cls(value)


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One item of a bulk operation: an id (and state) or an error, in input order."""

    index: int
    id: str | None = None
    state: State | None = None
    error: JobgateError | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index}
        if self.id is not None:
            out["id"] = self.id
        if self.state is not None:
            out["state"] = self.state.value
        if self.error is not None:
            out["error"] = self.error.to_json()
        return out


class NativeJobs:
    """The native API's use cases; shares the store and dispatcher with TES."""

    def __init__(
        self,
        jobs: JobService,
        *,
        jobs_dir: Path,
        parametric_cap: int = 10_000,
        max_reschedules: int = 10,
        callback_guard: Guard | None = None,
    ) -> None:
        """``callback_guard`` refuses callback URLs to addresses users may not reach (the
        webhook sender checks names again, resolved, before each delivery)."""
        self.jobs = jobs
        self.callback_guard = callback_guard or Guard(setting="JOBGATE_WEBHOOK_ALLOWED_HOSTS")
        self.store = jobs.store
        self.jobs_dir = jobs_dir
        self.parametric_cap = parametric_cap
        self.max_reschedules = max_reschedules

    # -- submission --------------------------------------------------------------------

    def _prepare(
        self, req: JobRequest, owner: Submitter, group_id: str | None, where: str
    ) -> tuple[NewJob, str | None]:
        self._check_callback(req, where)
        spec = req.task_spec()
        own = req.backend if req.backend in self.jobs.backends else None
        checked, backend, ignored, route = self.jobs.checked_spec(
            req, where=where, backend=own, own=_lifecycle_fields(req)
        )
        spec.update(
            {k: v for k, v in checked.items() if k in ("resources", ROUTED_KEY, LIFECYCLE_KEY)}
        )
        self._check_backend(req, where)
        if req.backend is not None:
            backend = req.backend
        warning = None
        if ignored:
            warning = f"ignored unsupported backend_parameters: {', '.join(ignored)}"
            spec["_warnings"] = [warning]
        if route is not None and req.backend is None:
            warning = f"{warning}; {route}" if warning else route
        job = NewJob(
            id=new_job_id(),
            spec=spec,
            backend=backend,
            owner=owner.owner,
            priority=req.priority,
            state=State.PAUSED if req.hold else State.QUEUED,
            group_id=group_id,
            share_group=owner.share_group,
            credential=self.jobs.credential_for(
                backend, owner.credential, routed=route is not None and req.backend is None
            ),
        )
        self.jobs.placed(job.id, backend)
        return job, warning

    def check(self, req: JobRequest, *, where: str = "body") -> Decision:
        """Every check :meth:`submit` runs, and its decision; nothing is stored."""
        self._check_callback(req, where)
        own = req.backend if req.backend in self.jobs.backends else None
        decision = self.jobs.check(req, where=where, backend=own, own=_lifecycle_fields(req))
        self._check_backend(req, where)
        return decision

    def _check_backend(self, req: JobRequest, where: str) -> None:
        if req.backend is not None and req.backend not in self.jobs.backends:
            raise InvalidRequest(
                "invalid job",
                errors=[
                    {
                        "where": f"{where}.backend",
                        "what": f"unknown backend {req.backend!r}; "
                        f"configured: {sorted(self.jobs.backends)}",
                    }
                ],
            )

    def _check_callback(self, req: JobRequest, where: str) -> None:
        if req.callback is None or req.callback.host is None:
            return
        port = req.callback.port or (443 if req.callback.scheme == "https" else 80)
        reason = self.callback_guard.precheck(req.callback.host, port)
        if reason is not None:
            raise InvalidRequest(
                "invalid job",
                errors=[{"where": f"{where}.callback", "what": f"callback refused: {reason}"}],
            )

    async def submit(self, req: JobRequest, *, owner: Submitter | str | None = None) -> JobRecord:
        job, warning = self._prepare(req, Submitter.of(owner), None, "body")
        await self.store.create([job], details=[warning or _created(job)])
        self.jobs.notifier.job_submitted()
        return await self.jobs.get(job.id)

    async def submit_many(
        self,
        items: Sequence[dict[str, Any]],
        *,
        owner: Submitter | str | None = None,
        group_id: str | None = None,
        where: str = "body.jobs",
    ) -> list[ItemResult]:
        """Validate each item; insert the valid ones in one transaction.

        Results are aligned with ``items``; an invalid item carries its error and does not
        stop the others.
        """
        submitter = Submitter.of(owner)
        results: list[ItemResult] = []
        ready: list[NewJob] = []
        details: list[str] = []
        for i, item in enumerate(items):
            try:
                req = JobRequest.model_validate(item)
                job, warning = self._prepare(req, submitter, group_id, f"{where}[{i}]")
            except ValidationError as exc:
                err = InvalidRequest("invalid job", errors=validation_errors(exc, f"{where}[{i}]"))
                results.append(ItemResult(i, error=err))
                continue
            except InvalidRequest as exc:
                results.append(ItemResult(i, error=exc))
                continue
            ready.append(job)
            details.append(warning or _created(job))
            results.append(ItemResult(i, id=job.id, state=job.state))
        await self.store.create(ready, details=details)
        if ready:
            self.jobs.notifier.job_submitted()
        return results

    async def submit_parametric(
        self, req: ParametricRequest, *, owner: Submitter | str | None = None
    ) -> tuple[str, list[ItemResult]]:
        """Expand ``req`` into one job per parameter combination, sharing a new group id."""
        try:
            combos = combinations(req.parameters, self.parametric_cap)
        except TooManyJobs as exc:
            raise InvalidRequest(
                "too many jobs", errors=[{"where": "body.parameters", "what": str(exc)}]
            ) from exc
        group_id = new_job_id()
        # substitute(req.job, values) per combination, walking only the entries that have
        # placeholders: the others are shared (validation does not change its input).
        plan = [(k, v, _has_placeholder(k) or _has_placeholder(v)) for k, v in req.job.items()]
        items = [
            {
                (substitute(k, vs) if dyn else k): (substitute(v, vs) if dyn else v)
                for k, v, dyn in plan
            }
            for vs in combos
        ]
        for item, values in zip(items, combos, strict=True):
            # Each job records its parameter values as labels, so searches can find it.
            labels = item.get("labels") or {}
            if isinstance(labels, dict):  # else validation says what is wrong with it
                item["labels"] = {**labels, **{f"param.{k}": str(v) for k, v in values.items()}}
        results = await self.submit_many(items, owner=owner, group_id=group_id, where="body.job")
        return group_id, results

    # -- reading -----------------------------------------------------------------------

    async def get(self, job_id: str) -> JobRecord:
        return await self.jobs.get(job_id)

    async def events(self, job_id: str) -> list[JobEvent]:
        await self.jobs.get(job_id)
        return await self.store.events(job_id)

    async def search(
        self, req: SearchRequest, *, owner: Scope = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        try:
            return await search_store.search(
                self.store.db, req, req.fields or DEFAULT_FIELDS, owner
            )
        except search_store.BadQuery as exc:
            raise InvalidRequest(
                "invalid search", errors=[{"where": "body", "what": str(exc)}]
            ) from exc

    async def summary(self, req: SummaryRequest, *, owner: Scope = None) -> list[dict[str, Any]]:
        try:
            return await search_store.summary(self.store.db, req, owner)
        except search_store.BadQuery as exc:
            raise InvalidRequest(
                "invalid summary", errors=[{"where": "body", "what": str(exc)}]
            ) from exc

    # -- control -----------------------------------------------------------------------

    async def cancel(self, job_id: str) -> State:
        return await self.jobs.cancel(job_id)

    async def reschedule(self, job_id: str) -> State:
        """Run a failed or canceled job again; its logs gain a new attempt entry."""
        rec = await self.jobs.get(job_id)
        if rec.state not in RESCHEDULABLE:
            raise Conflict(
                f"job {job_id} is {rec.state}; only "
                f"{', '.join(sorted(s.value for s in RESCHEDULABLE))} jobs can be rescheduled"
            )
        if rec.reschedules >= self.max_reschedules:
            raise Conflict(f"job {job_id} was rescheduled {rec.reschedules} times (the limit)")
        moved = await self.store.transition(
            job_id,
            rec.state,
            State.QUEUED,
            detail=f"rescheduled ({rec.reschedules + 1} of {self.max_reschedules})",
            source="api",
            reschedules=rec.reschedules + 1,
            attempt=0,
            native_id=None,
            not_before=None,
            waiting_since=None,
        )
        if moved is None:
            raise Conflict(f"job {job_id} changed state meanwhile; try again")
        self.jobs.notifier.job_submitted()
        return State.QUEUED

    async def start(self, job_id: str) -> State:
        """Queue a job that was created held."""
        rec = await self.jobs.get(job_id)
        if rec.state != State.PAUSED:
            raise Conflict(f"job {job_id} is {rec.state}, not held (PAUSED)")
        moved = await self.store.transition(
            job_id, State.PAUSED, State.QUEUED, detail="started", source="api"
        )
        if moved is None:
            raise Conflict(f"job {job_id} changed state meanwhile; try again")
        self.jobs.notifier.job_submitted()
        return State.QUEUED

    async def delete(self, job_id: str) -> None:
        """Delete a final (or held) job with its history and data."""
        error = (await self.delete_many([job_id]))[0].error
        if error is not None:
            raise error

    async def delete_many(
        self, ids: Sequence[str], *, only: Collection[str] | None = None
    ) -> list[ItemResult]:
        """Delete the final (or held) jobs of ``ids`` in one transaction; per-item results.

        Compare-and-delete on the state: a job that starts meanwhile is not deleted. With
        ``only``, ids not in it are answered as not found (jobs the caller may not see).
        """
        allowed = [i for i in dict.fromkeys(ids) if only is None or i in only]
        deleted = await self.store.delete_in_states(allowed, DELETABLE)
        results = []
        seen: set[str] = set()
        for i, job_id in enumerate(ids):
            if job_id in deleted and job_id not in seen:
                seen.add(job_id)
                results.append(ItemResult(i, id=job_id))
                continue
            hidden = job_id in seen or (only is not None and job_id not in only)
            rec = None if hidden else await self.store.get(job_id)
            if rec is None:
                results.append(ItemResult(i, id=job_id, error=JobNotFound(job_id)))
            else:
                msg = f"job {job_id} is {rec.state}; cancel it first (only final jobs)"
                results.append(ItemResult(i, id=job_id, error=Conflict(msg)))
        if deleted:
            await asyncio.to_thread(self._remove_data, deleted)
        return results

    def _remove_data(self, job_ids: set[str]) -> None:
        for job_id in job_ids:
            for d in (self.jobs_dir / job_id, self.uploads_dir(job_id), self.logs_dir(job_id)):
                with contextlib.suppress(FileNotFoundError):
                    shutil.rmtree(d)

    async def patch(
        self,
        job_id: str,
        *,
        priority: int | None = None,
        labels: dict[str, str | None] | None = None,
        app_status: str | None = None,
    ) -> JobRecord:
        """Change priority, labels (``None`` removes a label) or the application status."""
        rec = await self.jobs.get(job_id)
        values: dict[str, Any] = {}
        if priority is not None:
            values["priority"] = priority
        if app_status is not None:
            values["app_status"] = app_status
        if values:
            await self.store.update(job_id, **values)
        if labels:
            tags = dict(rec.spec.get("tags") or {})
            for k, v in labels.items():
                if v is None:
                    tags.pop(k, None)
                else:
                    tags[k] = v
            spec = {**rec.spec, "tags": tags}
            if not tags:
                spec.pop("tags")
            await self.store.set_tags(job_id, tags, spec)
        return await self.jobs.get(job_id)

    async def bulk(
        self, ids: Sequence[str], action: Callable[[str], Awaitable[State | None]]
    ) -> list[ItemResult]:
        """Apply ``action`` to each id; per-item results, one failure never stops the rest."""
        results = []
        for i, job_id in enumerate(ids):
            try:
                state = await action(job_id)
                results.append(ItemResult(i, id=job_id, state=state))
            except JobgateError as exc:
                results.append(ItemResult(i, id=job_id, error=exc))
        return results

    def uploads_dir(self, job_id: str) -> Path:
        return self.jobs_dir.parent / "uploads" / job_id

    def logs_dir(self, job_id: str) -> Path:
        """The executors' stdout/stderr kept after the job ended (see service/logs.py)."""
        return self.jobs_dir.parent / "logs" / job_id


DELETABLE = FINAL | {State.PAUSED}


def _has_placeholder(node: Any) -> bool:
    if isinstance(node, str):
        return PLACEHOLDER.search(node) is not None
    if isinstance(node, list):
        return any(_has_placeholder(v) for v in node)
    if isinstance(node, dict):
        return any(_has_placeholder(k) or _has_placeholder(v) for k, v in node.items())
    return False


def _lifecycle_fields(req: JobRequest) -> LifecycleFields:
    return LifecycleFields(req.retry, req.timeouts, req.heartbeat_timeout)


def _created(job: NewJob) -> str:
    return "submitted (held)" if job.state == State.PAUSED else "submitted"
