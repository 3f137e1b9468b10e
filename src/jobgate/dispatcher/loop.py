"""The dispatcher: claims queued jobs within each backend's capacity, starts a driver per
job (``driver.py``), follows backends (``watcher.py``), recovers after a restart
(``recovery.py``). The database is the source of truth; in-process notifications from
the service only shorten the waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import ValidationError

from jobgate.backends.base import Backend
from jobgate.backends.routing import Router
from jobgate.dispatcher.clock import Clock
from jobgate.dispatcher.driver import Drive, Ending, Engine, drive
from jobgate.dispatcher.hooks import CredentialSource, OutputPacker
from jobgate.dispatcher.lease import Lease
from jobgate.dispatcher.recovery import Recovery, with_system_log
from jobgate.dispatcher.settings import DispatchSettings
from jobgate.dispatcher.watcher import Watcher
from jobgate.domain.jsontext import non_finite
from jobgate.domain.models import Job, JobRecord
from jobgate.domain.states import State
from jobgate.staging import Stager
from jobgate.store.jobs import UNREADABLE_KEY, JobStore
from jobgate.store.leases import Leases

log = logging.getLogger(__name__)

UNBOUNDED = 10_000
"""Jobs at once on a backend that queues work itself (``slots`` is None)."""
STOP_PATIENCE = 30.0  # seconds stop() waits for cancelled tasks to end
LEASE_LOST_EXIT = 75
"""Exit status of a process whose dispatcher lost its lease (EX_TEMPFAIL: restart it)."""


def _exit_on_lost_lease() -> None:
    # Other dispatchers took this one for dead and adopted its jobs: driving them on
    # would run them twice. Exit at once, leaving running work to its adopters.
    log.critical("this dispatcher's lease was taken over; exiting")
    os._exit(LEASE_LOST_EXIT)


class Dispatcher:
    """Runs in the service's event loop. ``start`` recovers, then loops until ``stop``."""

    def __init__(
        self,
        store: JobStore,
        backends: Mapping[str, Backend],
        stager: Stager,
        settings: DispatchSettings,
        *,
        packer: OutputPacker | None = None,
        credentials: CredentialSource | None = None,
        router: Router | None = None,
        job_env: Callable[[Job, Backend], None] | None = None,
        on_lease_lost: Callable[[], None] = _exit_on_lost_lease,
    ) -> None:
        """``on_lease_lost``: called when other dispatchers adopted this one's jobs (the
        default exits the process)."""
        self.store = store
        self.backends = dict(backends)
        for key, backend in self.backends.items():
            if backend.name != key:
                raise ValueError(f"backend {backend.name!r} is configured as {key!r}")
        self.settings = settings
        self.watchers = {
            name: Watcher(b, store, settings.poll_interval) for name, b in self.backends.items()
        }
        self.engine = Engine(
            store, stager, settings, self.watchers, packer, credentials, router, job_env
        )
        self.lease = Lease(Leases(store.db), settings.lease_seconds)
        self.clock = Clock(
            store, self.end, self.lease.id, stalled_fail_after=settings.stalled_fail_after
        )
        for backend in self.backends.values():
            if backend.wants_credential and credentials is not None:
                backend.credentials = credentials
        self._wake = asyncio.Event()
        self._drives: dict[str, Drive] = {}
        self._used: dict[str, int] = dict.fromkeys(self.backends, 0)
        self._loops: list[asyncio.Task[None]] = []
        self.on_lease_lost = on_lease_lost

    @property
    def id(self) -> str:
        """This dispatcher's id (recorded in the jobs it claims)."""
        return self.lease.id

    # -- notifications from the service (cheap, never block) ---------------------------

    def job_submitted(self) -> None:
        self._wake.set()

    def cancel_requested(self, job_id: str) -> None:
        d = self._drives.get(job_id)
        if d is None or d.canceled.is_set():
            return
        d.canceled.set()
        if d.native_id is not None:
            self._spawn(d.backend.cancel(d.native_id), f"cancel-{job_id}")

    def end(self, job_id: str, ending: Ending) -> bool:
        """Stop a job this dispatcher drives, to end it as ``ending`` says (a timeout, a
        stall); False when it drives no such job."""
        d = self._drives.get(job_id)
        if d is None:
            return False
        if d.ending is None and not d.canceled.is_set():
            d.ending = ending
            d.canceled.set()
            if d.native_id is not None:
                self._spawn(d.backend.cancel(d.native_id), f"end-{job_id}")
        return True

    # -- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        await self.lease.take()
        await self.recover(await self.lease.orphans(), at_start=True)
        self._loops.append(asyncio.create_task(self._queue_loop(), name="dispatch-queue"))
        self._loops.append(asyncio.create_task(self._lease_loop(), name="dispatch-lease"))
        for name, watcher in self.watchers.items():
            self._loops.append(asyncio.create_task(watcher.poll_loop(), name=f"watch-{name}"))
            self._loops.append(asyncio.create_task(watcher.push_loop(), name=f"push-{name}"))

    async def stop(self) -> None:
        """Stop dispatching. Running jobs stay as recorded: recovery takes them up."""
        tasks = [*self._loops, *(d.task for d in self._drives.values() if d.task)]
        for t in tasks:
            t.cancel()
        if tasks:
            # Bounded: a task that ignores its cancel must not keep the gateway from stopping.
            ended, stuck = await asyncio.wait(tasks, timeout=STOP_PATIENCE)
            for t in ended:
                if not t.cancelled():
                    t.exception()  # retrieved: a drive's failure is already recorded
            for t in stuck:
                log.error("dispatcher task %s did not stop within %ss", t.get_name(), STOP_PATIENCE)
        for backend in self.backends.values():
            await backend.close()
        with contextlib.suppress(Exception):  # the database may be gone: the lease runs out
            await self.lease.leave()

    @property
    def running(self) -> int:
        return len(self._drives)

    async def recover(self, job_ids: list[str], *, at_start: bool = False) -> None:
        """Settle the jobs of dead dispatchers this one adopted (see ``recovery.py``); at
        start also when there are none (backends then clean up after dead runs)."""
        if not job_ids and not at_start:
            return
        if job_ids:
            log.info("recovering %d jobs of stopped dispatchers", len(job_ids))
        await Recovery(
            self.store,
            self.backends,
            self.settings.max_attempts,
            lambda rec, backend, nid: self._start(rec, backend, adopt=nid),
        ).run(job_ids)

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease.interval)
            try:
                if not await self.lease.renew():
                    self.on_lease_lost()
                    return
                await self.recover(await self.lease.orphans())
            except Exception:
                log.exception("renewing the dispatcher lease failed; retrying")

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
                    await self.clock.sweep()
            except Exception:
                log.exception("dispatch cycle failed; retrying")
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancel
            # that coincides with the wake-up, and stop() would then wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.poll_interval):
                    await self._wake.wait()
            self._wake.clear()

    async def _fill(self) -> None:
        if not self.lease.valid():
            return  # renewed first: another dispatcher may be taking this one's jobs
        for name, backend in self.backends.items():
            capacity = backend.slots if backend.slots is not None else UNBOUNDED
            while capacity - self._used[name] > 0:
                free = capacity - self._used[name]
                limit = min(free * 4, 256)
                try:
                    claimed, refused, read = await self._claim_batch(backend, free, limit)
                except Exception:
                    log.exception("claiming from backend %s failed; row by row", name)
                    claimed, refused, read = await self._claim_slowly(backend, free, limit)
                for rec, exc in refused:
                    await self._refuse(rec, exc)
                for rec, (job, cost) in claimed:
                    rec.attempt += 1
                    rec.state = State.INITIALIZING
                    self._start(rec, backend, job=job, cost=cost)
                if (not claimed and not refused) or read < limit:
                    break

    async def _claim_batch(
        self, backend: Backend, free: int, limit: int
    ) -> tuple[list[tuple[JobRecord, Any]], list[tuple[JobRecord, Exception]], int]:
        """One transaction: read the queue's head, pick what fits in ``free`` slots,
        claim it. Also returns how many rows were read."""
        read = 0

        def pick(
            records: list[JobRecord],
        ) -> tuple[list[tuple[JobRecord, Any]], list[tuple[JobRecord, Exception]]]:
            nonlocal read
            read = len(records)
            return _pick(records, backend, free)

        claimed, refused = await self.store.claim_next(
            backend.name, limit, pick, dispatcher=self.id
        )
        return claimed, refused, read

    async def _claim_slowly(
        self, backend: Backend, free: int, limit: int
    ) -> tuple[list[tuple[JobRecord, Any]], list[tuple[JobRecord, Exception]], int]:
        """The queue's head read row by row (a row that cannot be read is failed), then
        claimed: for when the batch read fails."""
        candidates = await self._queued(backend.name, limit)
        picked, refused = _pick(candidates, backend, free)
        won = set(await self.store.claim([rec.id for rec, _ in picked], dispatcher=self.id))
        return [(rec, extra) for rec, extra in picked if rec.id in won], refused, len(candidates)

    async def _queued(self, backend: str, limit: int) -> list[JobRecord]:
        """The queue's head; a row that cannot even be read is failed, not retried forever."""
        try:
            return await self.store.queued(backend, limit=limit)
        except Exception:
            log.exception("reading the queue of backend %s failed; row by row", backend)
        out = []
        for job_id in await self.store.queued_ids(backend, limit=limit):
            try:
                rec = await self.store.get(job_id)
            except Exception as exc:
                await self._fail_queued(job_id, f"the stored job cannot be read ({exc!r})")
                continue
            if rec is not None:
                out.append(rec)
        return out

    async def _refuse(self, rec: JobRecord, exc: Exception) -> None:
        log.error("job %s cannot run as stored: %r", rec.id, exc)
        if isinstance(exc, _NotFinite):
            why = str(exc)
        elif isinstance(exc, ValidationError):
            errors = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
            )
            why = f"the stored task is not valid: {errors}"
        else:
            why = f"the stored task cannot be run ({type(exc).__name__}: {exc})"
        await self._fail_queued(rec.id, why, rec.logs)

    async def _fail_queued(
        self, job_id: str, why: str, logs: list[dict[str, Any]] | None = None
    ) -> None:
        await self.store.transition(
            job_id,
            State.QUEUED,
            State.SYSTEM_ERROR,
            detail=why,
            unplaced=True,
            logs=with_system_log(logs, why),
        )

    async def _sweep_cancels(self) -> None:
        """Pick up cancels made by another process (or missed notifications)."""
        if not self._drives:
            return
        for rec in await self.store.in_states([State.CANCELING]):
            self.cancel_requested(rec.id)

    def _start(
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
        d = Drive(rec.id, backend, cost, native_id=adopt)
        self._drives[rec.id] = d
        self._used[backend.name] += cost
        d.task = asyncio.create_task(drive(self.engine, d, rec, job, adopt), name=f"drive-{rec.id}")
        d.task.add_done_callback(lambda _t: self._done(d))

    def _done(self, d: Drive) -> None:
        self._drives.pop(d.job_id, None)
        self._used[d.backend.name] -= d.cost
        self._wake.set()

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._loops.append(task)
        task.add_done_callback(self._loops.remove)


def _pick(
    records: list[JobRecord], backend: Backend, free: int
) -> tuple[list[tuple[JobRecord, Any]], list[tuple[JobRecord, Exception]]]:
    """The records that fit in ``free`` slots, in order, each with (job, cost); and those
    that cannot run as stored (a row no check at submission stopped: an older version,
    another replica), to be failed, or they head the queue and nothing runs."""
    picked: list[tuple[JobRecord, Any]] = []
    refused: list[tuple[JobRecord, Exception]] = []
    for rec in records:
        if free <= 0:
            break  # no slot left: don't validate the remaining candidates
        try:
            job = _runnable(rec)
            cost = backend.cost(job)
        except Exception as exc:
            refused.append((rec, exc))
            continue
        if cost > free:
            continue  # smaller jobs behind it may still fit
        picked.append((rec, (job, cost)))
        free -= cost
    return picked, refused


class _NotFinite(ValueError):
    """The stored spec holds NaN or an infinity, or is not JSON (no check at submission
    refused it)."""


def _runnable(rec: JobRecord) -> Job:
    """The job of ``rec``, refusing a spec no current submission could have stored."""
    if UNREADABLE_KEY in rec.spec:
        raise _NotFinite(f"{rec.spec[UNREADABLE_KEY]}; it cannot run")
    where = non_finite(rec.spec)
    if where:
        raise _NotFinite(
            f"the stored task holds a number that is not finite (NaN or infinity) at "
            f"{', '.join(where[:5])}; it cannot run"
        )
    return rec.to_job()
