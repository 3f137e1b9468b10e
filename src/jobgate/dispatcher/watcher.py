"""Following one backend's jobs: polls in batches (and push updates where the backend
has them), records their INITIALIZING / QUEUED / RUNNING moves and progress details,
hands final statuses to the jobs' drivers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from jobgate.backends.base import Backend, BackendStatus
from jobgate.domain.models import now
from jobgate.domain.states import FINAL, TRANSITIONS, State
from jobgate.observability import metrics
from jobgate.store.jobs import JobStore

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class _Tracked:
    job_id: str
    state: State
    """The job's state as this watcher last recorded it (INITIALIZING, QUEUED, RUNNING)."""
    detail: str | None = None
    created_at: datetime | None = None
    """Set while the job has not been seen RUNNING (for the first-run latency)."""
    final: asyncio.Future[BackendStatus] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Watcher:
    """Runs while the dispatcher runs; one per backend."""

    def __init__(self, backend: Backend, store: JobStore, poll_interval: float) -> None:
        self.backend = backend
        self.store = store
        self.poll_interval = poll_interval
        self._jobs: dict[str, _Tracked] = {}  # native id → what we follow

    async def wait_final(
        self, native_id: str, job_id: str, state: State, *, created_at: datetime | None = None
    ) -> BackendStatus:
        """The job's final status; meanwhile its non-final moves are recorded.
        ``state`` is the job's state now (as the driver recorded it); ``created_at``, when
        given, times the job's first move to RUNNING from its creation."""
        tracked = _Tracked(job_id, state, created_at=created_at if state != State.RUNNING else None)
        self._jobs[native_id] = tracked
        self.backend.changed.set()
        try:
            return await tracked.final
        finally:
            if self._jobs.get(native_id) is tracked:
                del self._jobs[native_id]

    async def poll_loop(self) -> None:
        """Poll all of the backend's followed jobs in one call, whenever it has news."""
        backend = self.backend
        while True:
            # asyncio.timeout: 3.11's wait_for can lose a cancel that meets a wake-up.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await backend.changed.wait()
            if backend.min_poll_interval:
                await asyncio.sleep(backend.min_poll_interval)
            backend.changed.clear()
            ids = list(self._jobs)
            if not ids:
                continue
            started = time.perf_counter()
            try:
                statuses = await backend.poll(ids)
            except Exception:
                metrics.BACKEND_ERRORS.labels(backend.name, "poll").inc()
                log.exception("polling backend %s failed; will retry", backend.name)
                continue
            finally:
                metrics.BACKEND_CALLS.labels(backend.name, "poll").observe(
                    time.perf_counter() - started
                )
            for nid in ids:
                st = statuses.get(nid)
                if st is None:
                    st = BackendStatus(
                        State.SYSTEM_ERROR,
                        system_logs=[f"backend {backend.name} no longer knows job {nid}"],
                    )
                await self.apply(nid, st)

    async def push_loop(self) -> None:
        """Apply what a notifying backend pushes (returns at once for those that don't)."""
        updates = self.backend.updates()
        if updates is None:
            return
        async for batch in updates:
            for nid, st in batch.items():
                try:
                    await self.apply(nid, st)
                except Exception:
                    log.exception("applying an update of %s from %s failed", nid, self.backend.name)

    async def apply(self, native_id: str, st: BackendStatus) -> None:
        """One status of one followed job (others' are ignored)."""
        tracked = self._jobs.get(native_id)
        if tracked is None or tracked.final.done():
            return
        if st.state in FINAL:
            tracked.final.set_result(st)
            return
        # A move the table does not allow (back to INITIALIZING once it ran) is news
        # of its detail only.
        if st.state != tracked.state and st.state in TRANSITIONS[tracked.state]:
            moved = await self._record(
                tracked,
                self.store.transition(tracked.job_id, tracked.state, st.state, detail=st.detail),
            )
            if moved is not None:
                tracked.state, tracked.detail = st.state, st.detail
                if st.state == State.RUNNING and tracked.created_at is not None:
                    metrics.FIRST_RUN_LATENCY.labels(self.backend.name).observe(
                        metrics.elapsed_since(tracked.created_at, now())
                    )
                    tracked.created_at = None
        elif st.detail and st.detail != tracked.detail:
            # e.g. "pending in the Slurm queue; Slurm: PENDING (Priority)"
            await self._record(
                tracked, self.store.update_in(tracked.job_id, tracked.state, detail=st.detail)
            )
            tracked.detail = st.detail

    async def _record(self, tracked: _Tracked, write: Awaitable[T]) -> T | None:
        try:
            return await write
        except Exception:
            log.exception("could not record the progress of job %s", tracked.job_id)
            return None
