"""One job's way through the dispatcher, from its claim to its final state.

Claim (QUEUED → INITIALIZING) → stage in (backends staging in the gateway) → submit →
QUEUED or RUNNING at the backend → final status (the watcher) → stage out → keep the
logs and the output sandbox → final state. A transient submit error puts the job back in
the gateway's queue with a retry delay instead (until the backend's patience runs out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import tarfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from jobgate.backends.base import Backend, BackendStatus, SubmitContext, SubmitError
from jobgate.backends.routing import ROUTED_KEY, TRIED_KEY, Router, Unroutable
from jobgate.dispatcher.hooks import CredentialSource, OutputPacker
from jobgate.dispatcher.settings import DispatchSettings
from jobgate.dispatcher.watcher import Watcher
from jobgate.domain.lifecycle import Policy, walltime
from jobgate.domain.models import WARNINGS_KEY, Job, JobRecord, Resources, TaskLog, now, rfc3339
from jobgate.domain.states import State, sources_of
from jobgate.errors import JobgateError, StagingError
from jobgate.observability import metrics, tracing
from jobgate.runner.logfiles import keep_logs, keep_texts
from jobgate.runner.taskdir import TaskDir
from jobgate.staging import PartialStagingError, Stager, make_output_dirs
from jobgate.store.jobs import JobStore

log = logging.getLogger(__name__)
T = TypeVar("T")

# The states a driver finishes its job from (CANCELING is the user's: → CANCELED).
_DRIVEN = frozenset({State.INITIALIZING, State.QUEUED, State.RUNNING})
RESUBMITS_KEY = "_resubmits"
"""Stored-spec key: how often the job was submitted again after a backend lost it."""
MAX_RESUBMITS = 3

_RAN = frozenset({State.COMPLETE, State.EXECUTOR_ERROR, State.PREEMPTED})
_LIKELY = (State.RUNNING, State.QUEUED, State.INITIALIZING)
_BEFORE_RUN = frozenset({State.QUEUED, State.INITIALIZING})


class Canceled(Exception):
    """Raised inside a driver when the user canceled the job before it reached a backend."""


@dataclass
class Drive:
    """What the dispatcher knows of one job it drives."""

    job_id: str
    backend: Backend
    cost: int
    task: asyncio.Task[None] | None = None
    native_id: str | None = None
    canceled: asyncio.Event = field(default_factory=asyncio.Event)
    ending: Ending | None = None
    """Set when the gateway itself ends the job (a timeout, a stall): how it ends."""


@dataclass(frozen=True, slots=True)
class Ending:
    """How the gateway ends a job it stopped: the final state, the reason (the job's
    detail), and the retry cause (``STALLED``…; empty: the job is not retried)."""

    state: State
    reason: str
    cause: str = ""


@dataclass(frozen=True)
class Engine:
    """What every driver uses."""

    store: JobStore
    stager: Stager
    settings: DispatchSettings
    watchers: dict[str, Watcher]
    packer: OutputPacker | None = None
    credentials: CredentialSource | None = None
    router: Router | None = None
    job_env: Callable[[Job, Backend], None] | None = None
    """Adds the per-job environment (heartbeat URL and token) to a job's executors."""


async def drive(eng: Engine, d: Drive, rec: JobRecord, job: Job, adopt: str | None) -> None:
    """Run ``job`` to its final state (``adopt``: the native id of a job a backend already
    holds, after a restart). Never raises but for cancellation of the service."""
    with tracing.job_span(
        job.id, "dispatch", backend=d.backend.name, attempt=rec.attempt, adopted=bool(adopt)
    ):
        await _drive(eng, d, rec, job, adopt)


async def _drive(eng: Engine, d: Drive, rec: JobRecord, job: Job, adopt: str | None) -> None:
    backend = d.backend
    staged = backend.staging == "gateway"
    taskdir = TaskDir((backend.task_root or eng.settings.jobs_dir) / job.id)
    prior = list(rec.logs or [])
    if adopt:
        tlog = TaskLog.model_validate(prior.pop()) if prior else TaskLog()
    else:
        tlog = TaskLog(
            start_time=rfc3339(now()),
            metadata={**backend.describe(), "attempt": str(rec.attempt)},
            system_logs=list(rec.spec.get(WARNINGS_KEY, [])) if rec.attempt == 1 else [],
        )

    if rec.retries and tlog.metadata is not None:
        tlog.metadata["retry"] = str(rec.retries)

    def logs() -> list[dict[str, Any]]:
        return [*prior, tlog.model_dump(mode="json", exclude_none=True)]

    state = rec.state
    try:
        if adopt is None:
            metrics.QUEUE_WAIT.labels(backend.name).observe(
                metrics.elapsed_since(rec.created_at, now())
            )
            if staged:
                await _unless_canceled(
                    d, asyncio.to_thread(taskdir.prepare, job, eng.stager.host_mounts)
                )
                if rec.spec.get("output_sandbox"):
                    await asyncio.to_thread(make_output_dirs, taskdir, rec.spec["output_sandbox"])
                with tracing.span("stage in", inputs=len(job.inputs or [])):
                    skip = backend.fetched_by_backend(job)
                    filled = await _unless_canceled(d, eng.stager.stage_in(job, taskdir, skip))
                if filled:
                    await _store_spec(eng, job, rec)
            credential = None
            if backend.wants_credential and eng.credentials is not None:
                credential = await eng.credentials(job.id)
            ctx = SubmitContext(
                attempt=rec.attempt, taskdir=taskdir if staged else None, credential=credential
            )
            _limit_walltime(job, rec, backend)
            if eng.job_env is not None and staged:
                eng.job_env(job, backend)
            started = time.perf_counter()
            with tracing.span("backend submit", backend=backend.name):
                try:
                    # Not cancelable midway: a submission the backend may have made must be
                    # known, so that the cancel below reaches it.
                    d.native_id = await backend.submit(job, ctx)
                except SubmitError as exc:
                    metrics.BACKEND_ERRORS.labels(backend.name, "submit").inc()
                    if exc.transient and eng.router is not None:
                        eng.router.failed(backend.name)
                        if await _reroute(eng, rec, job, backend, exc, prior):
                            taskdir.remove()
                            return
                    if exc.transient and await _wait_for_backend(eng, rec, backend, exc, prior):
                        taskdir.remove()
                        return
                    raise
                except Exception:
                    metrics.BACKEND_ERRORS.labels(backend.name, "submit").inc()
                    raise
                finally:
                    metrics.BACKEND_CALLS.labels(backend.name, "submit").observe(
                        time.perf_counter() - started
                    )
            if eng.router is not None:
                eng.router.succeeded(backend.name)
            accepted = now()
            metrics.SUBMIT_LATENCY.labels(backend.name).observe(
                metrics.elapsed_since(rec.created_at, accepted)
            )
            tlog.metadata = {**(tlog.metadata or {}), **backend.native_metadata(d.native_id)}
            state = backend.submitted_state
            moved = await eng.store.transition(
                job.id,
                State.INITIALIZING,
                state,
                detail=f"submitted to {backend.name}" if state == State.QUEUED else "running",
                native_id=d.native_id,
                logs=logs(),
                not_before=None,
                waiting_since=None,
            )
            if moved is None or d.canceled.is_set():
                await backend.cancel(d.native_id)
            elif state == State.RUNNING:
                metrics.FIRST_RUN_LATENCY.labels(backend.name).observe(
                    metrics.elapsed_since(rec.created_at, accepted)
                )
        # A job adopted after a restart may have run before: its first run is not timed.
        with tracing.span("wait for the backend", backend=backend.name):
            status = await eng.watchers[backend.name].wait_final(
                d.native_id or "", job.id, state, created_at=None if adopt else rec.created_at
            )
    except Canceled:
        if d.ending is not None:
            tlog.system_logs = [*(tlog.system_logs or []), d.ending.reason]
            tlog.end_time = rfc3339(now())
            await finish(eng.store, job.id, d.ending.state, logs(), d.ending.reason)
            await _retry(eng, rec, d.ending.state, d.ending.cause, d.ending.reason)
        else:
            await finish(eng.store, job.id, State.CANCELED, logs(), "canceled before it started")
        taskdir.remove()
        return
    except StagingError as exc:
        tlog.system_logs = [*(tlog.system_logs or []), exc.message]
        tlog.end_time = rfc3339(now())
        await finish(eng.store, job.id, State.SYSTEM_ERROR, logs(), exc.message)
        taskdir.remove()
        await _retry(eng, rec, State.SYSTEM_ERROR, State.SYSTEM_ERROR.value, exc.message)
        return
    except SubmitError as exc:
        tlog.system_logs = [*(tlog.system_logs or []), f"backend refused the task: {exc}"]
        await finish(eng.store, job.id, State.SYSTEM_ERROR, logs(), str(exc))
        taskdir.remove()
        return
    except asyncio.CancelledError:
        raise  # the service is stopping; recovery settles this job on the next start
    except Exception as exc:
        log.exception("task %s failed inside the gateway", job.id)
        tlog.system_logs = [*(tlog.system_logs or []), f"internal error: {exc!r}"]
        await finish(eng.store, job.id, State.SYSTEM_ERROR, logs(), "internal error")
        taskdir.remove()
        return

    tlog.logs = status.executor_logs
    tlog.system_logs = [*(tlog.system_logs or []), *status.system_logs]
    tlog.metadata = {**(tlog.metadata or {}), **status.metadata}
    if status.never_ran:
        tlog.end_time = rfc3339(now())
        if await _resubmit(eng, rec, job, backend, status, logs()):
            backend.forget(d.native_id or "")
            taskdir.remove()
            return
    if status.outputs:
        tlog.outputs = status.outputs
    final = status.state
    ending = d.ending
    if ending is not None and final == State.CANCELED:
        # The gateway stopped it (a timeout, a stall): say so, not "canceled".
        final = ending.state
        tlog.system_logs.append(ending.reason)
        status.detail = ending.reason
    if staged and final in (State.COMPLETE, State.EXECUTOR_ERROR) and job.outputs:
        try:
            with tracing.span("stage out", outputs=len(job.outputs)):
                tlog.outputs, filled = await eng.stager.stage_out(job, taskdir)
            if filled:
                await _store_spec(eng, job, rec)
        except PartialStagingError as exc:
            tlog.outputs = exc.uploaded
            tlog.system_logs.append(exc.message)
            if final == State.COMPLETE:
                final = State.SYSTEM_ERROR
    if staged:
        final = await _keep(eng, job, rec, taskdir, tlog, final)
    elif status.executor_logs:
        # Ran elsewhere: the reported output is what the log endpoints show once final.
        texts = [(el.stdout, el.stderr) for el in status.executor_logs]
        try:
            await asyncio.to_thread(keep_texts, texts, eng.settings.logs_dir / job.id)
        except OSError as exc:
            tlog.system_logs.append(f"could not keep the executors' stdout/stderr: {exc}")
    tlog.end_time = rfc3339(now())
    if not tlog.system_logs:
        tlog.system_logs = None
    detail = status.detail or _detail(final, tlog)
    await finish(eng.store, job.id, final, logs(), detail)
    backend.forget(d.native_id or "")
    if not eng.settings.keep_task_dirs:
        await asyncio.to_thread(taskdir.remove)
    cause = final.value if ending is None or final != ending.state else ending.cause
    await _retry(eng, rec, final, cause, detail)


RETRIED = frozenset({State.SYSTEM_ERROR, State.PREEMPTED, State.EXECUTOR_ERROR})


async def _retry(eng: Engine, rec: JobRecord, final: State, cause: str, detail: str) -> bool:
    """Queue a job that ended ``final`` again when its retry policy covers ``cause``
    (``SYSTEM_ERROR``, ``PREEMPTED``, ``STALLED``, ``EXECUTOR_ERROR``) and retries are
    left, after the policy's backoff (the claim waits for ``not_before``)."""
    policy = Policy.of_spec(rec.spec)
    if final not in RETRIED or not cause or cause not in policy.retry_on:
        return False
    if rec.retries >= policy.retries:
        return False
    n = rec.retries + 1
    delay = policy.retry_delay(n)
    moved = await eng.store.transition(
        rec.id,
        final,
        State.QUEUED,
        detail=f"retry {n} of {policy.retries} after {cause} ({detail}); next try in {delay:g}s",
        retries=n,
        attempt=0,
        native_id=None,
        not_before=now() + timedelta(seconds=delay),
        waiting_since=None,
    )
    if moved is not None and eng.router is not None:
        eng.router.placed(rec.id, rec.backend)
    return moved is not None


def _limit_walltime(job: Job, rec: JobRecord, backend: Backend) -> None:
    """Pass a job's running timeout to a backend that enforces time limits itself, unless
    the job names its own ``time``."""
    running = Policy.of_spec(rec.spec).timeouts.get("running")
    if not running or "time" not in backend.parameter_keys:
        return
    if job.resources is None:
        job.resources = Resources()
    params = dict(job.resources.backend_parameters or {})
    params.setdefault("time", walltime(running))
    job.resources.backend_parameters = params


async def _reroute(
    eng: Engine,
    rec: JobRecord,
    job: Job,
    backend: Backend,
    exc: SubmitError,
    prior: list[dict[str, Any]],
) -> bool:
    """Move a job the routing policy placed to its next candidate after ``backend``
    refused it transiently; False when it was placed explicitly or no other candidate is
    up (then it waits for ``backend``)."""
    assert eng.router is not None
    if not rec.spec.get(ROUTED_KEY):
        return False
    tried = [backend.name, *rec.spec.get(TRIED_KEY, [])]
    try:
        route = eng.router.route(job, exclude=tried)
    except Unroutable:
        return False
    if eng.router.is_open(route.backend) or not eng.router.health(route.backend):
        return False  # nothing better up: wait for this one
    spec = {**rec.spec, TRIED_KEY: tried}
    moved = await eng.store.transition(
        rec.id,
        State.INITIALIZING,
        State.QUEUED,
        detail=f"failed over from {backend.name} ({exc}); {route.reason}",
        logs=prior or None,
        attempt=max(0, rec.attempt - 1),
        native_id=None,
        backend=route.backend,
        spec=spec,
        not_before=None,
    )
    if moved is None:
        await finish(eng.store, rec.id, State.CANCELED, prior, "canceled before it started")
        return True
    eng.router.placed(rec.id, route.backend)
    return True


async def _resubmit(
    eng: Engine,
    rec: JobRecord,
    job: Job,
    backend: Backend,
    status: BackendStatus,
    logs: list[dict[str, Any]],
) -> bool:
    """Put a job its backend lost before it ever ran back in the gateway's queue: to the
    next routing candidate when the policy placed it (and one is up), else to the same
    backend; at most ``MAX_RESUBMITS`` times. False (it ends SYSTEM_ERROR) past that, or
    when the job is no longer recorded QUEUED (it may have run)."""
    count = int(rec.spec.get(RESUBMITS_KEY, 0))
    if count >= MAX_RESUBMITS:
        return False
    target, reason = backend.name, f"submitted to {backend.name} again"
    spec = {**rec.spec, RESUBMITS_KEY: count + 1}
    if eng.router is not None and rec.spec.get(ROUTED_KEY):
        tried = [backend.name, *rec.spec.get(TRIED_KEY, [])]
        with contextlib.suppress(Unroutable):
            route = eng.router.route(job, exclude=tried)
            if not eng.router.is_open(route.backend) and eng.router.health(route.backend):
                target, reason = route.backend, route.reason
                spec[TRIED_KEY] = tried
    why = status.detail or f"lost by {backend.name}"
    # QUEUED → INITIALIZING only while still QUEUED: a job seen RUNNING is never resubmitted.
    if await eng.store.transition(rec.id, State.QUEUED, State.INITIALIZING, detail=why) is None:
        return False
    moved = await eng.store.transition(
        rec.id,
        State.INITIALIZING,
        State.QUEUED,
        detail=f"resubmitted: {why}, before it ever ran; {reason}",
        logs=logs,
        native_id=None,
        backend=target,
        spec=spec,
        not_before=None,
        waiting_since=None,
    )
    if moved is None:
        await finish(eng.store, rec.id, State.CANCELED, logs, "canceled before it started")
        return True
    if eng.router is not None:
        eng.router.placed(rec.id, target)
    return True


async def _wait_for_backend(
    eng: Engine,
    rec: JobRecord,
    backend: Backend,
    exc: SubmitError,
    prior: list[dict[str, Any]],
) -> bool:
    """Put a job whose backend said "later" back in the gateway's queue, to be claimed
    again after a delay; False once the backend's patience has run out."""
    at = now()
    since = rec.waiting_since or at
    waited = (at - since).total_seconds()
    if waited >= backend.submit_patience:
        return False
    # The delay doubles with the time waited so far, capped, with jitter so that many jobs
    # refused at once do not come back at once.
    delay = min(eng.settings.retry_max_delay, max(1.0, waited)) * random.uniform(0.75, 1.25)
    delay = min(delay, max(0.5, backend.submit_patience - waited))
    moved = await eng.store.transition(
        rec.id,
        State.INITIALIZING,
        State.QUEUED,
        detail=f"waiting for backend {backend.name}: {exc}; next try in {delay:.0f}s "
        f"(for up to {backend.submit_patience:g}s)",
        logs=prior or None,
        attempt=max(0, rec.attempt - 1),
        native_id=None,
        not_before=at + timedelta(seconds=delay),
        waiting_since=since,
    )
    if moved is None:  # canceled meanwhile: the user's cancel ends it
        await finish(eng.store, rec.id, State.CANCELED, prior, "canceled before it started")
    return True


async def _keep(
    eng: Engine, job: Job, rec: JobRecord, taskdir: TaskDir, tlog: TaskLog, final: State
) -> State:
    """Keep the executors' logs and pack the output sandbox. Runs before the final state
    is recorded: a client that sees the job final finds both in place."""
    notes = tlog.system_logs if tlog.system_logs is not None else []
    try:
        await asyncio.to_thread(
            keep_logs,
            taskdir,
            job.executors,
            eng.settings.logs_dir / job.id,
            copy=eng.settings.keep_task_dirs,
        )
    except OSError as exc:
        notes.append(f"could not keep the executors' stdout/stderr: {exc}")
    patterns = rec.spec.get("output_sandbox")
    if patterns and final in (State.COMPLETE, State.EXECUTOR_ERROR):
        if eng.packer is None:
            notes.append("output_sandbox not kept: this gateway keeps no sandboxes")
        else:
            try:
                notes.extend((await eng.packer.pack(job.id, rec.owner, taskdir, patterns))[1])
            except (JobgateError, OSError, tarfile.TarError) as exc:
                notes.append(f"output_sandbox not kept: {getattr(exc, 'message', exc)}")
                if final == State.COMPLETE:
                    final = State.SYSTEM_ERROR
    tlog.system_logs = notes
    return final


async def _unless_canceled(d: Drive, work: Awaitable[T]) -> T:
    """Await ``work`` unless the job is canceled first (then raise :class:`Canceled`)."""
    if d.canceled.is_set():
        if isinstance(work, asyncio.Future | asyncio.Task):
            work.cancel()
        elif hasattr(work, "close"):
            work.close()
        raise Canceled
    task = asyncio.ensure_future(work)
    stop = asyncio.ensure_future(d.canceled.wait())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()  # the service is stopping: the work must not outlive its drive
        raise
    finally:
        stop.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise Canceled


async def finish(
    store: JobStore, job_id: str, state: State, logs: list[dict[str, Any]], detail: str
) -> None:
    """Record the final state once: from INITIALIZING, QUEUED (at the backend) or RUNNING,
    or CANCELING → CANCELED. One write in the common case."""
    sources = sources_of(state, _DRIVEN)
    via = None
    if state in _RAN:
        # Ended between two polls while last seen in the backend's queue (or staging): it ran.
        via = (_BEFORE_RUN, State.RUNNING, "ran (seen once it had ended)")
        sources.extend(_BEFORE_RUN)
    # The likeliest current state first: each miss costs a statement.
    sources = sorted(set(sources), key=_LIKELY.index)
    moved = await store.transition(job_id, sources, state, detail=detail, logs=logs, via=via)
    if moved is None:
        await store.transition(
            job_id, State.CANCELING, State.CANCELED, detail="canceled by user", logs=logs
        )


async def _store_spec(eng: Engine, job: Job, rec: JobRecord) -> None:
    """Store the spec with what staging filled in (input/output types), unless that
    changes nothing (a write saved)."""
    spec = spec_json(job, rec.spec)
    if spec != rec.spec:
        await eng.store.update(job.id, spec=spec)
        rec.spec = spec


def spec_json(job: Job, old: dict[str, Any]) -> dict[str, Any]:
    """The stored spec with server-filled input/output types."""
    spec = dict(old)
    if job.inputs is not None:
        spec["inputs"] = [i.model_dump(mode="json", exclude_none=True) for i in job.inputs]
    if job.outputs is not None:
        spec["outputs"] = [o.model_dump(mode="json", exclude_none=True) for o in job.outputs]
    return spec


def _detail(state: State, tlog: TaskLog) -> str:
    if state == State.EXECUTOR_ERROR and tlog.logs:
        failed = next((i for i, e in enumerate(tlog.logs) if e.exit_code != 0), None)
        if failed is not None:
            return f"executor {failed} exited with code {tlog.logs[failed].exit_code}"
    if state == State.SYSTEM_ERROR and tlog.system_logs:
        return tlog.system_logs[-1]
    return state.value.lower()


__all__ = ["BackendStatus", "Canceled", "Drive", "Ending", "Engine", "drive", "finish"]
