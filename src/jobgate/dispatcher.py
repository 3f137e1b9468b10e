"""The dispatcher: claims queued jobs, drives each through the state machine, recovers.

Per job: claim (QUEUED → INITIALIZING) → stage in → backend.submit → RUNNING → wait for a
final status (the backend is polled in batches) → stage out → final state. The database is
the source of truth; in-process notifications from the service only shorten the waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tarfile
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from jobgate.backends.base import Backend, BackendStatus, SubmitError
from jobgate.config import Settings
from jobgate.domain.models import WARNINGS_KEY, Job, JobRecord, TaskLog, now, rfc3339
from jobgate.domain.states import ACTIVE, FINAL, State, sources_of
from jobgate.errors import JobgateError, StagingError
from jobgate.runner.taskdir import TaskDir
from jobgate.service.logs import keep_logs
from jobgate.service.sandboxes import Sandboxes
from jobgate.staging import PartialStagingError, Stager, make_output_dirs
from jobgate.store.jobs import JobStore
from jobgate.store.sandboxes import SandboxStore

log = logging.getLogger(__name__)
T = TypeVar("T")

_RUNNING_OR_STARTING = frozenset({State.INITIALIZING, State.RUNNING})


class _Canceled(Exception):
    """Raised inside a driver when the user canceled the job before it reached a backend."""


@dataclass
class _Driver:
    job_id: str
    backend: Backend
    cost: int
    task: asyncio.Task[None] | None = None
    native_id: str | None = None
    canceled: asyncio.Event = field(default_factory=asyncio.Event)


class Dispatcher:
    """Runs in the service's event loop. ``start`` recovers, then loops until ``stop``."""

    def __init__(
        self,
        store: JobStore,
        backends: dict[str, Backend],
        stager: Stager,
        settings: Settings,
        *,
        sandboxes: Sandboxes | None = None,
    ) -> None:
        self.store = store
        self.backends = backends
        self.stager = stager
        self.settings = settings
        self.sandboxes = sandboxes or Sandboxes(
            SandboxStore(store.db), settings.sandboxes_dir, max_bytes=settings.sandbox_max_bytes
        )
        self._wake = asyncio.Event()
        self._drivers: dict[str, _Driver] = {}
        self._used: dict[str, int] = dict.fromkeys(backends, 0)
        self._waiters: dict[tuple[str, str], asyncio.Future[BackendStatus]] = {}
        self._progress: dict[tuple[str, str], str] = {}  # last detail noted per running job
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False

    # -- notifications from the service (cheap, never block) ---------------------------

    def job_submitted(self) -> None:
        self._wake.set()

    def cancel_requested(self, job_id: str) -> None:
        d = self._drivers.get(job_id)
        if d is None or d.canceled.is_set():
            return
        d.canceled.set()
        if d.native_id is not None:
            self._spawn(d.backend.cancel(d.native_id), f"cancel-{job_id}")

    # -- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        await self.recover()
        self._loops.append(asyncio.create_task(self._queue_loop(), name="dispatch-queue"))
        for backend in self.backends.values():
            self._loops.append(
                asyncio.create_task(self._watch(backend), name=f"watch-{backend.name}")
            )

    async def stop(self) -> None:
        """Stop dispatching. Running jobs stay RUNNING in the store: recovery takes them up."""
        self._stopping = True
        tasks = [*self._loops, *(d.task for d in self._drivers.values() if d.task)]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for backend in self.backends.values():
            await backend.close()

    @property
    def running(self) -> int:
        return len(self._drivers)

    # -- recovery ----------------------------------------------------------------------

    async def recover(self) -> None:
        """Settle every job a previous run left active: adopt, re-queue or fail it.

        Each backend says (in one call) which of its jobs it still holds; those are adopted
        by their native id, never submitted again. A job caught while being submitted
        (INITIALIZING) is adopted too when the backend finds it.
        """
        records = await self.store.in_states(ACTIVE)
        adopted: dict[str, str] = {}
        for name, backend in self.backends.items():
            mine = [r for r in records if r.backend == name and r.state != State.QUEUED]
            if not mine:
                continue
            try:
                adopted.update(await backend.reattach(mine))
            except Exception:
                log.exception("backend %s could not reattach; adopting recorded ids only", name)
                adopted.update({r.id: r.native_id for r in mine if r.native_id})
        for rec in records:
            owner = self.backends.get(rec.backend)
            native_id = adopted.get(rec.id)
            if owner is not None and native_id is not None:
                if rec.state == State.INITIALIZING:
                    rec = await self._adopt_submitted(rec, owner, native_id)
                if rec.state in (State.RUNNING, State.CANCELING):
                    self._start_driver(rec, owner, adopt=native_id)
                    continue
            if rec.state == State.QUEUED:
                continue
            logs = _with_system_log(rec.logs, "interrupted: the gateway stopped while this ran")
            if rec.state == State.CANCELING:
                await self.store.transition(
                    rec.id,
                    State.CANCELING,
                    State.CANCELED,
                    detail="canceled (gateway restarted)",
                    source="recovery",
                    logs=logs,
                )
            elif rec.attempt < self.settings.max_attempts:
                await self.store.transition(
                    rec.id,
                    rec.state,
                    State.QUEUED,
                    source="recovery",
                    logs=logs,
                    detail=f"queued again after a gateway restart (attempt {rec.attempt} "
                    f"of {self.settings.max_attempts} was interrupted)",
                )
            else:
                await self.store.transition(
                    rec.id,
                    rec.state,
                    State.SYSTEM_ERROR,
                    source="recovery",
                    logs=logs,
                    detail=f"interrupted by gateway restarts {rec.attempt} times; giving up",
                )

    async def _adopt_submitted(self, rec: JobRecord, backend: Backend, native_id: str) -> JobRecord:
        """A job the backend accepted just before the gateway stopped: record it RUNNING."""
        tlog = TaskLog(
            start_time=rfc3339(now()),
            metadata={
                **backend.describe(),
                "attempt": str(rec.attempt),
                **backend.native_metadata(native_id),
            },
            system_logs=[f"found at {backend.name} as {native_id} after a gateway restart"],
        )
        logs = [*(rec.logs or []), tlog.model_dump(mode="json", exclude_none=True)]
        moved = await self.store.transition(
            rec.id,
            State.INITIALIZING,
            State.RUNNING,
            detail="running (re-adopted after a gateway restart)",
            source="recovery",
            native_id=native_id,
            logs=logs,
        )
        if moved is not None:
            rec.state, rec.native_id, rec.logs = State.RUNNING, native_id, logs
        return rec

    # -- claiming ----------------------------------------------------------------------

    async def _queue_loop(self) -> None:
        last_sweep = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._fill()
                # Submissions wake this loop often; the cancel sweep needs no such hurry.
                if loop.time() - last_sweep >= self.settings.poll_interval:
                    last_sweep = loop.time()
                    await self._sweep_cancels()
            except Exception:
                log.exception("dispatch cycle failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval)
            self._wake.clear()

    async def _fill(self) -> None:
        for name, backend in self.backends.items():
            capacity = backend.slots if backend.slots is not None else 10_000
            free = capacity - self._used[name]
            while free > 0:
                limit = min(free * 4, 256)
                candidates = await self.store.queued(name, limit=limit)
                picked: list[tuple[JobRecord, Job, int]] = []
                for rec in candidates:
                    if free <= 0:
                        break  # no slot left: don't validate the remaining candidates
                    job = rec.to_job()
                    cost = backend.cost(job)
                    if cost > free:
                        continue  # smaller jobs behind it may still fit
                    picked.append((rec, job, cost))
                    free -= cost
                # One transaction claims the whole batch (compare-and-set on QUEUED).
                claimed = set(await self.store.claim([rec.id for rec, _, _ in picked]))
                for rec, job, cost in picked:
                    if rec.id not in claimed:
                        free += cost  # canceled or taken meanwhile
                        continue
                    rec.attempt += 1
                    rec.state = State.INITIALIZING
                    self._start_driver(rec, backend, job=job, cost=cost)
                if not claimed or len(candidates) < limit:
                    break

    async def _sweep_cancels(self) -> None:
        """Pick up cancels made by another process (or missed notifications)."""
        if not self._drivers:
            return
        for rec in await self.store.in_states([State.CANCELING]):
            self.cancel_requested(rec.id)

    def _start_driver(
        self,
        rec: JobRecord,
        backend: Backend,
        *,
        job: Job | None = None,
        cost: int | None = None,
        adopt: str | None = None,
    ) -> None:
        job = job or rec.to_job()
        cost = backend.cost(job) if cost is None else cost
        d = _Driver(rec.id, backend, cost, native_id=adopt)
        self._drivers[rec.id] = d
        self._used[backend.name] += cost
        d.task = asyncio.create_task(self._drive(d, rec, job, adopt), name=f"drive-{rec.id}")
        d.task.add_done_callback(lambda _t: self._driver_done(d))

    def _driver_done(self, d: _Driver) -> None:
        self._drivers.pop(d.job_id, None)
        self._used[d.backend.name] -= d.cost
        self._wake.set()

    # -- one job -----------------------------------------------------------------------

    async def _drive(self, d: _Driver, rec: JobRecord, job: Job, adopt: str | None) -> None:
        backend = d.backend
        taskdir = TaskDir((backend.jobs_dir or self.settings.jobs_dir) / job.id)
        prior = list(rec.logs or [])
        if adopt:
            tlog = TaskLog.model_validate(prior.pop()) if prior else TaskLog()
        else:
            tlog = TaskLog(
                start_time=rfc3339(now()),
                metadata={**backend.describe(), "attempt": str(rec.attempt)},
                system_logs=list(rec.spec.get(WARNINGS_KEY, [])) if rec.attempt == 1 else [],
            )

        def logs() -> list[dict[str, Any]]:
            return [*prior, tlog.model_dump(mode="json", exclude_none=True)]

        try:
            if adopt is None:
                await self._unless_canceled(d, asyncio.to_thread(taskdir.prepare, job))
                if rec.spec.get("output_sandbox"):
                    await asyncio.to_thread(make_output_dirs, taskdir, rec.spec["output_sandbox"])
                if await self._unless_canceled(d, self.stager.stage_in(job, taskdir)):
                    await self.store.update(job.id, spec=_spec_json(job, rec.spec))
                d.native_id = await backend.submit(job, taskdir)
                tlog.metadata = {**(tlog.metadata or {}), **backend.native_metadata(d.native_id)}
                moved = await self.store.transition(
                    job.id,
                    State.INITIALIZING,
                    State.RUNNING,
                    detail="running",
                    native_id=d.native_id,
                    logs=logs(),
                )
                if moved is None or d.canceled.is_set():
                    await backend.cancel(d.native_id)
            status = await self._wait_final(backend, d.native_id or "")
        except _Canceled:
            await self._finish(job.id, State.CANCELED, logs(), "canceled before it started")
            taskdir.remove()
            return
        except StagingError as exc:
            tlog.system_logs = [*(tlog.system_logs or []), exc.message]
            tlog.end_time = rfc3339(now())
            await self._finish(job.id, State.SYSTEM_ERROR, logs(), exc.message)
            taskdir.remove()
            return
        except SubmitError as exc:
            tlog.system_logs = [*(tlog.system_logs or []), f"backend refused the task: {exc}"]
            await self._finish(job.id, State.SYSTEM_ERROR, logs(), str(exc))
            taskdir.remove()
            return
        except asyncio.CancelledError:
            raise  # the service is stopping; recovery settles this job on the next start
        except Exception as exc:
            log.exception("task %s failed inside the gateway", job.id)
            tlog.system_logs = [*(tlog.system_logs or []), f"internal error: {exc!r}"]
            await self._finish(job.id, State.SYSTEM_ERROR, logs(), "internal error")
            taskdir.remove()
            return

        tlog.logs = status.executor_logs
        tlog.system_logs = [*(tlog.system_logs or []), *status.system_logs]
        tlog.metadata = {**(tlog.metadata or {}), **status.metadata}
        final = status.state
        if final in (State.COMPLETE, State.EXECUTOR_ERROR) and job.outputs:
            try:
                tlog.outputs, filled = await self.stager.stage_out(job, taskdir)
                if filled:
                    await self.store.update(job.id, spec=_spec_json(job, rec.spec))
            except PartialStagingError as exc:
                tlog.outputs = exc.uploaded
                tlog.system_logs.append(exc.message)
                if final == State.COMPLETE:
                    final = State.SYSTEM_ERROR
        final = await self._keep(job, rec, taskdir, tlog, final)
        tlog.end_time = rfc3339(now())
        if not tlog.system_logs:
            tlog.system_logs = None
        await self._finish(job.id, final, logs(), status.detail or _detail(final, tlog))
        backend.forget(d.native_id or "")
        self._progress.pop((backend.name, d.native_id or ""), None)
        if not self.settings.keep_task_dirs:
            await asyncio.to_thread(taskdir.remove)

    async def _keep(
        self, job: Job, rec: JobRecord, taskdir: TaskDir, tlog: TaskLog, final: State
    ) -> State:
        """Keep the executors' logs and pack the output sandbox. Runs before the final
        state is recorded: a client that sees the job final finds both in place."""
        notes = tlog.system_logs if tlog.system_logs is not None else []
        try:
            await asyncio.to_thread(
                keep_logs,
                taskdir,
                job.executors,
                self.settings.logs_dir / job.id,
                copy=self.settings.keep_task_dirs,
            )
        except OSError as exc:
            notes.append(f"could not keep the executors' stdout/stderr: {exc}")
        patterns = rec.spec.get("output_sandbox")
        if patterns and final in (State.COMPLETE, State.EXECUTOR_ERROR):
            try:
                notes.extend((await self.sandboxes.pack(job.id, rec.owner, taskdir, patterns))[1])
            except (JobgateError, OSError, tarfile.TarError) as exc:
                notes.append(f"output_sandbox not kept: {getattr(exc, 'message', exc)}")
                if final == State.COMPLETE:
                    final = State.SYSTEM_ERROR
        tlog.system_logs = notes
        return final

    async def _unless_canceled(self, d: _Driver, work: Awaitable[T]) -> T:
        """Await ``work`` unless the job is canceled first (then raise :class:`_Canceled`)."""
        if d.canceled.is_set():
            if isinstance(work, asyncio.Future | asyncio.Task):
                work.cancel()
            elif hasattr(work, "close"):
                work.close()
            raise _Canceled
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(d.canceled.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise _Canceled

    async def _wait_final(self, backend: Backend, native_id: str) -> BackendStatus:
        fut: asyncio.Future[BackendStatus] = asyncio.get_running_loop().create_future()
        self._waiters[(backend.name, native_id)] = fut
        backend.changed.set()
        try:
            return await fut
        finally:
            self._waiters.pop((backend.name, native_id), None)

    async def _finish(
        self, job_id: str, state: State, logs: list[dict[str, Any]], detail: str
    ) -> None:
        """Record the final state once: from INITIALIZING/RUNNING, or CANCELING → CANCELED."""
        moved = await self.store.transition(
            job_id, sources_of(state, _RUNNING_OR_STARTING), state, detail=detail, logs=logs
        )
        if moved is None:
            await self.store.transition(
                job_id, State.CANCELING, State.CANCELED, detail="canceled by user", logs=logs
            )

    # -- polling -----------------------------------------------------------------------

    async def _watch(self, backend: Backend) -> None:
        """Poll all of a backend's running jobs in one call, whenever it has news."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(backend.changed.wait(), self.settings.poll_interval)
            if backend.min_poll_interval:
                await asyncio.sleep(backend.min_poll_interval)
            backend.changed.clear()
            ids = [nid for (b, nid) in self._waiters if b == backend.name]
            if not ids:
                continue
            try:
                statuses = await backend.poll(ids)
            except Exception:
                log.exception("polling backend %s failed; will retry", backend.name)
                continue
            await self._note_progress(backend, statuses)
            for nid in ids:
                fut = self._waiters.get((backend.name, nid))
                if fut is None or fut.done():
                    continue
                st = statuses.get(nid)
                if st is None:
                    fut.set_result(
                        BackendStatus(
                            State.SYSTEM_ERROR,
                            system_logs=[f"backend {backend.name} no longer knows job {nid}"],
                        )
                    )
                elif st.state in FINAL:
                    fut.set_result(st)

    async def _note_progress(self, backend: Backend, statuses: dict[str, BackendStatus]) -> None:
        """Record what a backend says of running jobs (e.g. "pending in the Slurm queue
        (Priority)") as their detail, when it changes."""
        changed = {
            nid: st.detail
            for nid, st in statuses.items()
            if st.state == State.RUNNING
            and st.detail
            and self._progress.get((backend.name, nid)) != st.detail
        }
        if not changed:
            return
        by_native = {d.native_id: d.job_id for d in self._drivers.values() if d.native_id}
        for nid, detail in changed.items():
            job_id = by_native.get(nid)
            if job_id is None:
                continue
            self._progress[(backend.name, nid)] = detail
            try:
                await self.store.update_in(job_id, State.RUNNING, detail=detail)
            except Exception:
                log.exception("could not record progress of job %s", job_id)

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._loops.append(task)
        task.add_done_callback(self._loops.remove)


def _spec_json(job: Job, old: dict[str, Any]) -> dict[str, Any]:
    """The stored spec with server-filled input/output types."""
    spec = dict(old)
    if job.inputs is not None:
        spec["inputs"] = [i.model_dump(mode="json", exclude_none=True) for i in job.inputs]
    if job.outputs is not None:
        spec["outputs"] = [o.model_dump(mode="json", exclude_none=True) for o in job.outputs]
    return spec


def _with_system_log(logs: list[dict[str, Any]] | None, line: str) -> list[dict[str, Any]]:
    out = [dict(entry) for entry in logs or []]
    if not out:
        out.append({"logs": [], "outputs": []})
    out[-1]["system_logs"] = [*(out[-1].get("system_logs") or []), line]
    out[-1].setdefault("end_time", rfc3339(now()))
    return out


def _detail(state: State, tlog: TaskLog) -> str:
    if state == State.EXECUTOR_ERROR and tlog.logs:
        failed = next((i for i, e in enumerate(tlog.logs) if e.exit_code != 0), None)
        if failed is not None:
            return f"executor {failed} exited with code {tlog.logs[failed].exit_code}"
    if state == State.SYSTEM_ERROR and tlog.system_logs:
        return tlog.system_logs[-1]
    return state.value.lower()
