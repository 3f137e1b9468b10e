"""In-process fan-out of committed job events to live consumers (SSE streams, webhooks).

The store calls :meth:`EventBus.publish` after each commit; a consumer that falls behind
loses live events (its queue is bounded) and is told so, so it can resume from the store
with ``events_after(seq)`` — the database stays the source of truth.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from jobgate.domain.models import JobEvent


class Overflow(Exception):
    """The subscriber fell behind and missed events; resume from the store."""


@dataclass(eq=False)
class Subscription:
    accept: Callable[[JobEvent], bool]
    queue: asyncio.Queue[JobEvent | None] = field(default_factory=lambda: asyncio.Queue(10_000))
    overflowed: bool = False


class EventBus:
    """Publish/subscribe on the event loop; publishing never blocks or raises."""

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()

    def publish(self, events: list[JobEvent]) -> None:
        for sub in list(self._subs):
            for event in events:
                if not sub.accept(event):
                    continue
                try:
                    sub.queue.put_nowait(event)
                except asyncio.QueueFull:
                    sub.overflowed = True
                    break

    @contextlib.asynccontextmanager
    async def subscribe(
        self, accept: Callable[[JobEvent], bool] = lambda _e: True
    ) -> AsyncIterator[Subscription]:
        sub = Subscription(accept)
        self._subs.add(sub)
        try:
            yield sub
        finally:
            self._subs.discard(sub)

    @staticmethod
    async def next(sub: Subscription, wait: float | None = None) -> JobEvent | None:
        """The next event, or None after ``wait`` seconds; raises :class:`Overflow`."""
        if sub.overflowed:
            raise Overflow
        try:
            async with asyncio.timeout(wait):
                return await sub.queue.get()
        except TimeoutError:
            return None

    @property
    def subscribers(self) -> int:
        return len(self._subs)
