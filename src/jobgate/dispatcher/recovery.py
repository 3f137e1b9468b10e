"""After a restart: settle every job an earlier run of the gateway left active.

Each backend says (in one call) which of its jobs it still holds; those are adopted by
their native id, never submitted again. A job caught while being submitted
(INITIALIZING without a native id) is adopted too when the backend finds it, as is one
its backend was staging (INITIALIZING with its native id); the others run again (up to
``max_attempts``) or fail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from jobgate.backends.base import Backend
from jobgate.domain.models import JobRecord, TaskLog, now, rfc3339
from jobgate.domain.states import ACTIVE, State
from jobgate.store.jobs import JobStore

log = logging.getLogger(__name__)

Adopt = Callable[[JobRecord, Backend, str], None]
"""Start following a job a backend holds (record, its backend, its native id)."""


class Recovery:
    def __init__(
        self, store: JobStore, backends: Mapping[str, Backend], max_attempts: int, adopt: Adopt
    ) -> None:
        self.store = store
        self.backends = backends
        self.max_attempts = max_attempts
        self.adopt = adopt

    async def run(self, job_ids: list[str] | None = None) -> None:
        """Settle the active jobs (``job_ids``: only those)."""
        records = await self._active(job_ids)
        adopted: dict[str, str] = {}
        # Jobs other dispatchers drive (only this one's are recovered here): their work at
        # a backend is theirs, not to be adopted or cleaned up.
        others: set[str] = set()
        if job_ids is not None:
            others = {i for i, _ in await self.store.ids_in_states(ACTIVE)} - set(job_ids)
        for name, backend in self.backends.items():
            backend.leave_alone(others)
            mine = [r for r in records if r.backend == name and _placed_or_active(r)]
            if not mine and not backend.reattach_always:
                continue
            try:
                adopted.update(await backend.reattach(mine))
            except Exception:
                log.exception("backend %s could not reattach; adopting recorded ids only", name)
                adopted.update({r.id: r.native_id for r in mine if r.native_id})
        for rec in records:
            try:
                await self._recover_one(rec, adopted.get(rec.id))
            except Exception as exc:
                # One row that cannot be settled must not keep the gateway from starting.
                log.exception("could not recover job %s", rec.id)
                why = f"could not be recovered after a gateway restart ({type(exc).__name__})"
                await self._give_up(
                    rec.id, rec.state, why, with_system_log(rec.logs, f"{why}: {exc}")
                )

    async def _active(self, job_ids: list[str] | None) -> list[JobRecord]:
        """The jobs to recover (those a backend may hold); one whose row cannot be read
        is failed, so it cannot keep the gateway from starting."""
        try:
            return [
                *await self.store.in_states(ACTIVE, ids=job_ids),
                *await self.store.in_states([State.QUEUED], placed=True, ids=job_ids),
            ]
        except Exception:
            log.exception("reading the jobs to recover failed; row by row")
        out = []
        wanted = None if job_ids is None else set(job_ids)
        for job_id, state in await self.store.ids_in_states(ACTIVE):
            if wanted is not None and job_id not in wanted:
                continue
            try:
                rec = await self.store.get(job_id)
            except Exception as exc:
                why = f"the stored job cannot be read ({type(exc).__name__}: {exc})"
                await self._give_up(job_id, state, why, with_system_log(None, why))
                continue
            if rec is not None:
                out.append(rec)
        return out

    async def _give_up(
        self, job_id: str, state: State, why: str, logs: list[dict[str, Any]]
    ) -> None:
        """End a job recovery cannot settle: SYSTEM_ERROR (CANCELED if it was canceling)."""
        end = State.CANCELED if state == State.CANCELING else State.SYSTEM_ERROR
        try:
            await self.store.transition(
                job_id, state, end, source="recovery", detail=why, logs=logs
            )
        except Exception:
            log.exception("could not record the end of job %s either", job_id)

    async def _recover_one(self, rec: JobRecord, native_id: str | None) -> None:
        owner = self.backends.get(rec.backend)
        if owner is not None and native_id is not None:
            # INITIALIZING with its native id recorded: the backend reported it staging
            # (it has it); without: caught while being submitted, found by the backend.
            if rec.state == State.INITIALIZING and rec.native_id != native_id:
                rec = await self._adopt_submitted(rec, owner, native_id)
            if rec.state in (State.INITIALIZING, State.QUEUED, State.RUNNING, State.CANCELING):
                self.adopt(rec, owner, native_id)
                return
        if rec.state == State.QUEUED and rec.native_id is None:
            return  # in the gateway's queue: nothing to recover
        logs = with_system_log(rec.logs, "interrupted: the gateway stopped while this ran")
        if rec.state == State.CANCELING:
            await self.store.transition(
                rec.id,
                State.CANCELING,
                State.CANCELED,
                detail="canceled (gateway restarted)",
                source="recovery",
                logs=logs,
            )
        elif rec.state == State.QUEUED and rec.attempt < self.max_attempts:
            # Its backend's queue lost it: back to the gateway's queue (the same state).
            await self.store.update_in(
                rec.id,
                State.QUEUED,
                native_id=None,
                logs=logs,
                detail=f"queued again: backend {rec.backend} no longer holds it after a "
                f"gateway restart (attempt {rec.attempt} of {self.max_attempts})",
            )
        elif rec.attempt < self.max_attempts:
            await self.store.transition(
                rec.id,
                rec.state,
                State.QUEUED,
                source="recovery",
                logs=logs,
                native_id=None,
                detail=f"queued again after a gateway restart (attempt {rec.attempt} "
                f"of {self.max_attempts} was interrupted)",
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
        """A job the backend accepted just before the gateway stopped: record it so."""
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
        state = backend.submitted_state
        moved = await self.store.transition(
            rec.id,
            State.INITIALIZING,
            state,
            detail=f"{state.value.lower()} (re-adopted after a gateway restart)",
            source="recovery",
            native_id=native_id,
            logs=logs,
            not_before=None,
            waiting_since=None,
        )
        if moved is not None:
            rec.state, rec.native_id, rec.logs = state, native_id, logs
        return rec


def _placed_or_active(rec: JobRecord) -> bool:
    return rec.state != State.QUEUED or rec.native_id is not None


def with_system_log(logs: list[dict[str, Any]] | None, line: str) -> list[dict[str, Any]]:
    """``logs`` with ``line`` added to the last attempt's system logs (ended now)."""
    out = [dict(entry) for entry in logs or []]
    if not out:
        out.append({"logs": [], "outputs": []})
    out[-1]["system_logs"] = [*(out[-1].get("system_logs") or []), line]
    out[-1].setdefault("end_time", rfc3339(now()))
    return out
