"""The job clock: per-state timeouts and heartbeat watching of the jobs that have them.

Swept by the dispatcher every poll interval over the watched jobs only (those whose
policy names a timeout or a heartbeat timeout, an indexed flag). A job past its time in
QUEUED, INITIALIZING or RUNNING is ended with a reason naming the timeout; a RUNNING job
without a heartbeat for its heartbeat timeout is flagged stalled (an event, its detail
says so; TES clients still see RUNNING), retried when its policy covers STALLED, or
failed once it stayed stalled for ``stalled_fail_after`` seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from jobgate.dispatcher.driver import Ending
from jobgate.dispatcher.recovery import with_system_log
from jobgate.domain.lifecycle import STALLED, TIMEOUT_END, Policy
from jobgate.domain.models import JobRecord, now
from jobgate.domain.states import State
from jobgate.store.jobs import JobStore

log = logging.getLogger(__name__)

WATCHED = (State.QUEUED, State.INITIALIZING, State.RUNNING)


class Clock:
    """``end(job_id, ending)`` stops a job this process drives (False: it drives none).
    It watches the jobs ``dispatcher`` drives and those in the gateway's queue."""

    def __init__(
        self,
        store: JobStore,
        end: Callable[[str, Ending], bool],
        dispatcher: str,
        *,
        stalled_fail_after: float = 0.0,
    ) -> None:
        self.store = store
        self.end = end
        self.dispatcher = dispatcher
        self.stalled_fail_after = stalled_fail_after

    async def sweep(self) -> None:
        at = now()
        for rec in await self.store.watched(WATCHED, dispatcher=self.dispatcher):
            try:
                await self._check(rec, at)
            except Exception:
                log.exception("checking the clock of job %s failed", rec.id)

    async def _check(self, rec: JobRecord, at: datetime) -> None:
        policy = Policy.of_spec(rec.spec)
        since = rec.state_since or rec.created_at
        limit = policy.timeout_of(rec.state)
        if limit is not None and (at - since).total_seconds() > limit[1]:
            name, seconds = limit
            what = "walltime" if name == "running" else f"{name} timeout"
            reason = f"{what} exceeded: {rec.state.value} for more than {seconds:g}s"
            await self._stop(rec, Ending(TIMEOUT_END[name], reason))
            return
        hb = policy.heartbeat_timeout
        if rec.state != State.RUNNING or not hb:
            return
        last = max(since, rec.heartbeat_at) if rec.heartbeat_at else since
        quiet = (at - last).total_seconds()
        if quiet <= hb:
            if rec.stalled:  # a heartbeat came (the heartbeat service normally says so)
                await self.store.mark(
                    rec.id, State.RUNNING, detail="running (heartbeats again)", stalled=0
                )
            return
        reason = f"stalled: no heartbeat for {quiet:.0f}s (heartbeat_timeout {hb:g}s)"
        if not rec.stalled:
            await self.store.mark(rec.id, State.RUNNING, detail=reason, stalled=1)
        if STALLED in policy.retry_on and rec.retries < policy.retries:
            self.end(rec.id, Ending(State.SYSTEM_ERROR, reason, STALLED))
        elif self.stalled_fail_after and quiet > hb + self.stalled_fail_after:
            self.end(rec.id, Ending(State.SYSTEM_ERROR, f"{reason}; failed as stalled"))

    async def _stop(self, rec: JobRecord, ending: Ending) -> None:
        if self.end(rec.id, ending):
            return
        if rec.state == State.QUEUED and rec.native_id is None:
            # In the gateway's queue: no driver holds it.
            await self.store.transition(
                rec.id,
                State.QUEUED,
                ending.state,
                detail=ending.reason,
                unplaced=True,
                logs=with_system_log(rec.logs, ending.reason),
            )
