"""The dashboard's overview: what the jobs a caller may see did over the last minutes.

Computed from the job events of the window (each job's creation, its first RUNNING and its
final state) and the current counts, so it costs one bounded read and needs no table of
its own. Jobs per state over time are the current counts walked back through the events.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from jobgate.domain.models import rfc3339
from jobgate.domain.query import SummaryRequest
from jobgate.domain.states import FINAL, State
from jobgate.store import overview as overview_store
from jobgate.store import search as search_store
from jobgate.store.access import Database
from jobgate.store.visibility import Scope

MAX_EVENTS = 25_000
"""Events read for one overview (the newest ones when the window holds more)."""
DURATION_BINS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
"""Upper bounds (seconds) of the wait and run time histogram bins; one more bin is above."""
WAITING = "waiting for backend"
"""How a job's detail starts while its backend refuses submissions for now."""


@dataclass(frozen=True, slots=True)
class Window:
    minutes: int = 60

    def start(self, now: datetime) -> datetime:
        end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        return end - timedelta(minutes=self.minutes)


def histogram(values: list[float]) -> list[dict[str, Any]]:
    """Counts per duration bin: ``le`` is the bin's upper bound in seconds (None: above)."""
    counts = [0] * (len(DURATION_BINS) + 1)
    for v in values:
        i = next((i for i, b in enumerate(DURATION_BINS) if v <= b), len(DURATION_BINS))
        counts[i] += 1
    bounds: list[int | None] = [*DURATION_BINS, None]
    return [{"le": b, "count": c} for b, c in zip(bounds, counts, strict=True)]


async def state_counts(db: Database, owner: Scope, group_by: list[str]) -> list[dict[str, Any]]:
    return await search_store.summary(db, SummaryRequest(group_by=group_by), owner)


async def overview(
    db: Database,
    owner: Scope,
    backends: list[str],
    window: Window,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The overview document the dashboard draws (see the keys below)."""
    now = now or datetime.now(UTC)
    start = window.start(now)
    events, truncated = await overview_store.recent_events(db, start, owner, MAX_EVENTS)
    by_state = await state_counts(db, owner, ["state"])
    by_backend = await state_counts(db, owner, ["backend", "state"])
    waiting = await overview_store.waiting(db, owner, WAITING)
    errors = await overview_store.last_errors(db, backends, owner)

    minutes = window.minutes
    minute_of = [start + timedelta(minutes=i) for i in range(minutes)]

    def bucket(at: datetime) -> int:
        return min(max(int((at - start).total_seconds() // 60), 0), minutes - 1)

    submitted = [0] * minutes
    completed = [0] * minutes
    started: dict[str, datetime] = {}
    waits: list[float] = []
    runs: list[float] = []
    for e in events:
        if e.from_state is None:
            submitted[bucket(e.at)] += 1
        if e.to_state in FINAL:
            completed[bucket(e.at)] += 1
            began = started.pop(e.job_id, None)
            if began is not None:
                runs.append((e.at - began).total_seconds())
        if e.to_state == State.RUNNING and e.job_id not in started:
            started[e.job_id] = e.at
            waits.append(max((e.at - e.job_created_at).total_seconds(), 0.0))

    # Walk back from now: before an event, its job was in from_state, not to_state.
    counts = Counter({g["state"]: g["count"] for g in by_state})
    series: list[dict[str, int]] = [{} for _ in range(minutes)]
    pending = list(events)
    for i in range(minutes - 1, -1, -1):
        end = minute_of[i] + timedelta(minutes=1)
        while pending and pending[-1].at >= end:
            e = pending.pop()
            counts[e.to_state] -= 1
            if e.from_state is not None:
                counts[e.from_state] += 1
        series[i] = {s: c for s, c in counts.items() if c > 0}

    health: dict[str, dict[str, Any]] = {
        name: {"name": name, "queued": 0, "running": 0, "waiting": 0, "last_error": None}
        for name in backends
    }
    for g in by_backend:
        h = health.get(g["backend"])
        if h is None:
            continue
        if g["state"] == State.QUEUED:
            h["queued"] += g["count"]
        elif g["state"] in (State.RUNNING, State.INITIALIZING, State.CANCELING):
            h["running"] += g["count"]
    for name, n in waiting.items():
        if name in health:
            health[name]["waiting"] = n
    for err in errors:
        health[err.backend]["last_error"] = {"detail": err.detail, "at": rfc3339(err.at)}
    return {
        "window": {"start": rfc3339(start), "minutes": minutes, "truncated": truncated},
        "minutes": [rfc3339(m) for m in minute_of],
        "states": series,
        "counts": dict(Counter({g["state"]: g["count"] for g in by_state})),
        "submitted": submitted,
        "completed": completed,
        "queue_wait": histogram(waits),
        "run_time": histogram(runs),
        "backends": list(health.values()),
    }
