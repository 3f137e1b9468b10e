"""Heartbeats of running jobs: taken in memory at once, written in batches.

A heartbeat (load, memory, CPU seconds, wall time, a stdout snippet, an application
status) never waits for the database: :meth:`Heartbeats.heartbeat` keeps the job's latest
one in a dict, and a flusher writes them all every ``flush_interval`` seconds in one
transaction. A stalled job that sends one is RUNNING (not stalled) again, with an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

from jobgate.domain.models import now
from jobgate.domain.states import FINAL, State
from jobgate.errors import Conflict
from jobgate.store.jobs import JobStore

log = logging.getLogger(__name__)

FIELDS = ("load", "memory_bytes", "cpu_seconds", "wall_seconds", "stdout", "app_status")
MAX_SNIPPET = 4096


class Heartbeats:
    def __init__(self, store: JobStore, *, flush_interval: float = 1.0) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self._pending: dict[str, tuple[datetime, dict[str, Any]]] = {}
        self._ended: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def heartbeat(self, caller: str | None, job_id: str, fields: dict[str, Any]) -> None:
        """Take one heartbeat of ``job_id`` (the caller's access is checked by the route).
        Raises :class:`Conflict` for a job known to have ended."""
        if job_id in self._ended:
            raise Conflict(f"job {job_id} has ended; heartbeats are no longer taken")
        kept = {k: fields[k] for k in FIELDS if fields.get(k) is not None}
        if isinstance(kept.get("stdout"), str):
            kept["stdout"] = kept["stdout"][-MAX_SNIPPET:]
        if caller is not None:
            kept["from"] = caller
        self._pending[job_id] = (now(), kept)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="heartbeats")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush()
            except Exception:
                log.exception("writing heartbeats failed; retrying")

    async def flush(self) -> None:
        """Write the heartbeats taken since the last flush (one transaction)."""
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        beats = [(job_id, at, fields) for job_id, (at, fields) in batch.items()]
        states = await self.store.record_heartbeats(beats)
        for job_id, _at, _fields in beats:
            state, stalled = states.get(job_id, (State.COMPLETE, False))
            if state in FINAL:
                self._ended.add(job_id)
            elif state not in (State.QUEUED, State.INITIALIZING, State.RUNNING):
                continue  # held (or canceling): not recorded, but not ended either
            elif stalled:
                await self.store.mark(
                    job_id, State.RUNNING, detail="running (heartbeats again)", stalled=0
                )
