"""The event bus fed from the database, for processes that share it with others.

When API workers and dispatchers are separate processes, no one process commits every
event, so each one's bus is fed by reading the ``job_events`` table after the last event
seen, every ``interval`` seconds, instead of by its own store's commits. PostgreSQL may
commit a lower sequence number after a higher one (sequences are taken at insert): a gap
below the newest event seen is waited for, for ``gap_patience`` seconds, before it is
taken for a rolled-back insert. SQLite commits them in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from jobgate.service.events import EventBus
from jobgate.store.jobs import JobStore
from jobgate.store.webhooks import max_event_seq

log = logging.getLogger(__name__)

PAGE = 1000
IDLE_INTERVAL = 1.0
"""Seconds between reads while nobody is subscribed (only the newest seq is read then)."""


class EventTail:
    """Publishes every committed event on ``bus``, in sequence order, exactly once."""

    def __init__(
        self, store: JobStore, bus: EventBus, *, interval: float = 0.1, gap_patience: float = 5.0
    ) -> None:
        self.store = store
        self.bus = bus
        self.interval = interval
        self.gap_patience = gap_patience
        self.floor = 0
        """Every event up to this sequence number has been published (or given up on)."""
        self._above: set[int] = set()
        self._gap_since: float | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Begin after the newest event already committed (history is the store's)."""
        self.floor = await max_event_seq(self.store.db)
        self._task = asyncio.create_task(self._run(), name="event-tail")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                while await self.poll() == PAGE:
                    pass  # a backlog: read on without waiting
            except Exception:
                log.exception("reading new job events failed; retrying")
            await asyncio.sleep(self.interval if self.bus.subscribers else IDLE_INTERVAL)

    async def poll(self) -> int:
        """Publish the events committed since the last poll; how many rows were read.
        With nobody subscribed only the newest sequence number is read: a subscriber
        replays history from the store and takes what follows its subscription from here."""
        if not self.bus.subscribers:
            self.floor = max(self.floor, await max_event_seq(self.store.db))
            self._above = {seq for seq in self._above if seq > self.floor}
            self._gap_since = None
            return 0
        rows = await self.store.events_after(self.floor, limit=PAGE)
        fresh = [e for e in rows if e.seq is not None and e.seq not in self._above]
        if fresh:
            self.bus.publish(fresh)
            self._above.update(e.seq for e in fresh if e.seq is not None)
        self._advance()
        return len(rows)

    def _advance(self) -> None:
        while self._above:
            if self.floor + 1 in self._above:
                self.floor += 1
                self._above.discard(self.floor)
                self._gap_since = None
                continue
            # A gap below events already seen: an insert not yet committed, or rolled back.
            at = time.monotonic()
            if self._gap_since is None:
                self._gap_since = at
                return
            if at - self._gap_since < self.gap_patience:
                return
            self.floor += 1  # given up on: it was rolled back
            self._gap_since = None
