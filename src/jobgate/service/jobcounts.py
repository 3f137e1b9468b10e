"""Counts jobs per backend and state now and then, for the ``jobgate_jobs`` gauge.

One grouped query (answered from the (backend, state) index) every ``interval`` seconds,
rather than a count per request or per scrape: a scrape then costs the same with a
million jobs as with ten, and the gauge is at most ``interval`` seconds old.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from jobgate.domain.states import State
from jobgate.observability.metrics import set_job_counts
from jobgate.store.jobs import JobStore

log = logging.getLogger(__name__)


class JobCounts:
    """Refreshes the job-count gauge while started."""

    def __init__(self, store: JobStore, interval: float, backends: list[str]) -> None:
        self.store = store
        self.interval = interval
        self.backends = backends
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Count now. Every configured backend shows every state (0 when empty), so a
        state that empties reads 0 instead of vanishing from the scrape."""
        counted = await self.store.counts_by_backend_state()
        counts = {(b, s.value): 0 for b in self.backends for s in State}
        counts.update(counted)
        set_job_counts(counts, time.time())

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._forever(), name="jobgate-job-counts")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except Exception:
                log.exception("counting jobs for the metrics failed; will retry")
