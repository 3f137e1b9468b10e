"""A resumable, gap-free feed of job events: the store's history, then the live bus.

The order of operations is what makes it exact: subscribe to the bus first, then replay
from the store, then go live, dropping what was already delivered (by ``seq``). Any event
committed before the replay read is in the replay; any committed after is in the queue.
A consumer that falls behind the bus (queue overflow) is resumed from the store the same way.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator

from jobgate.domain.models import JobEvent
from jobgate.domain.states import FINAL
from jobgate.service.events import EventBus, Overflow, Subscription
from jobgate.store.jobs import JobStore

REPLAY_PAGE = 500


class _Seen:
    """Sequence numbers already delivered: a bounded window plus a floor below it."""

    def __init__(self, floor: int, size: int = 20_000) -> None:
        self.floor = floor
        self.size = size
        self._set: set[int] = set()
        self._order: deque[int] = deque()

    def add(self, seq: int) -> bool:
        """True if ``seq`` is new (and now counted as delivered)."""
        if seq <= self.floor or seq in self._set:
            return False
        self._set.add(seq)
        self._order.append(seq)
        if len(self._order) > self.size:
            old = self._order.popleft()
            self._set.discard(old)
            self.floor = max(self.floor, old)
        return True


async def _replay(
    store: JobStore, after: int, job_id: str | None, owner: str | None
) -> AsyncIterator[JobEvent]:
    while True:
        batch = await store.events_after(after, job_id=job_id, owner=owner, limit=REPLAY_PAGE)
        for event in batch:
            yield event
        if len(batch) < REPLAY_PAGE:
            return
        after = batch[-1].seq or after


def _drain(sub: Subscription) -> list[JobEvent]:
    out = []
    while not sub.queue.empty():
        item = sub.queue.get_nowait()
        if item is not None:
            out.append(item)
    sub.overflowed = False
    return out


async def follow_events(
    store: JobStore,
    bus: EventBus,
    *,
    after: int | None,
    job_id: str | None = None,
    owner: str | None = None,
    heartbeat: float = 15.0,
) -> AsyncIterator[JobEvent | None]:
    """Events with ``seq > after`` in order, each once, then live ones as they commit.

    ``after=None`` starts live (no replay). ``None`` items are heartbeats: one as soon as
    the subscription is active (a client may rely on it to know nothing is missed from
    then on) and one per ``heartbeat`` idle seconds. With ``job_id`` the feed ends after
    the job's final state (at once if it is final and nothing newer than ``after`` exists)
    or when the job is deleted.
    """

    def accept(e: JobEvent) -> bool:
        return (job_id is None or e.job_id == job_id) and (owner is None or e.owner == owner)

    seen = _Seen(after if after is not None else -1)
    last: int | None = after
    async with bus.subscribe(accept) as sub:
        yield None
        final_now = False
        if job_id is not None:
            rec = await store.get(job_id)
            if rec is None:
                return
            final_now = rec.state in FINAL
        resume = after
        while True:
            if resume is not None:
                async for event in _replay(store, resume, job_id, owner):
                    if event.seq is not None and seen.add(event.seq):
                        yield event
                        last = max(last or 0, event.seq)
                        final_now = event.to_state in FINAL
                resume = None
            # Final with nothing newer delivered or pending: the client has it all.
            if job_id is not None and final_now:
                return
            try:
                live = await bus.next(sub, heartbeat)
            except Overflow:
                missed = _drain(sub)
                seqs = [e.seq for e in missed if e.seq is not None]
                resume = last if last is not None else (min(seqs) - 1 if seqs else None)
                continue
            if live is None:
                yield None
                if job_id is not None and await store.get(job_id) is None:
                    return  # deleted: no final state will ever come
                continue
            if live.seq is None or not seen.add(live.seq):
                continue
            yield live
            last = max(last or 0, live.seq)
            if job_id is not None and live.to_state in FINAL:
                return
