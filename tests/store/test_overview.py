"""The dashboard overview computed from a real store: counts over time, rates, durations,
and only the caller's jobs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from jobgate.domain.models import new_job_id
from jobgate.domain.states import State
from jobgate.service.overview import Window, histogram, overview
from jobgate.store import overview as overview_store
from jobgate.store.access import Database
from jobgate.store.jobs import JobStore, NewJob
from jobgate.store.visibility import Visibility


def job(owner: str) -> NewJob:
    return NewJob(id=new_job_id(), spec={"name": "x"}, backend="local", owner=owner)


async def test_overview_counts_rates_durations_and_scope(engine: AsyncEngine) -> None:
    store = JobStore(Database(engine))
    try:
        mine = [job("alice") for _ in range(3)]
        await store.create([*mine, job("bob")])
        for j in mine[:2]:
            await store.transition(j.id, State.QUEUED, State.INITIALIZING)
            await store.transition(j.id, State.INITIALIZING, State.RUNNING)
        await store.transition(mine[0].id, State.RUNNING, State.COMPLETE)

        doc = await overview(store.db, Visibility("alice"), ["local", "slurm"], Window(30))
        assert doc["counts"] == {"QUEUED": 1, "RUNNING": 1, "COMPLETE": 1}
        assert sum(doc["submitted"]) == 3 and sum(doc["completed"]) == 1
        assert doc["states"][-1] == {"QUEUED": 1, "RUNNING": 1, "COMPLETE": 1}
        assert doc["states"][0] == {}  # before the jobs were made
        assert sum(b["count"] for b in doc["queue_wait"]) == 2
        assert sum(b["count"] for b in doc["run_time"]) == 1
        local = next(b for b in doc["backends"] if b["name"] == "local")
        assert (local["queued"], local["running"], local["waiting"]) == (1, 1, 0)
        assert len(doc["minutes"]) == 30

        everyone = await overview(store.db, None, ["local"], Window(30))
        assert everyone["counts"]["QUEUED"] == 2
        assert sum(everyone["submitted"]) == 4
    finally:
        store.close()


async def test_recent_events_start_at_the_window(engine: AsyncEngine) -> None:
    store = JobStore(Database(engine))
    try:
        await store.create([job("alice") for _ in range(5)])
        future = datetime.now(UTC) + timedelta(minutes=5)
        assert await overview_store.recent_events(store.db, future, None, 100) == ([], False)
        past = datetime.now(UTC) - timedelta(minutes=5)
        events, truncated = await overview_store.recent_events(store.db, past, None, 100)
        assert len(events) == 5 and not truncated
        newest, truncated = await overview_store.recent_events(store.db, past, None, 2)
        assert [e.job_id for e in newest] == [e.job_id for e in events[-2:]] and truncated
    finally:
        store.close()


def test_histogram_bins() -> None:
    bins = histogram([0.5, 1, 1.5, 7200])
    assert bins[0] == {"le": 1, "count": 2}
    assert bins[1] == {"le": 2, "count": 1}
    assert bins[-1] == {"le": None, "count": 1}
