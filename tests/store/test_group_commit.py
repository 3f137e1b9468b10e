"""Group commit: concurrent writes share commits, yet each behaves as its own transaction."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Connection, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from jobgate.domain.models import new_job_id
from jobgate.domain.states import State
from jobgate.observability.metrics import DB_COMMITS
from jobgate.store.jobs import JobStore, NewJob
from jobgate.store.schema import job_tags


def _job(job_id: str | None = None) -> NewJob:
    spec = {"executors": [{"image": "a", "command": ["true"]}], "tags": {"k": "v"}}
    return NewJob(id=job_id or new_job_id(), spec=spec, backend="local")


@pytest.fixture()
def store(engine: AsyncEngine) -> JobStore:
    return JobStore(engine)


async def _visible_elsewhere(engine: AsyncEngine, job_id: str) -> str | None:
    # Another connection than the store's: what it sees is committed.
    async with engine.connect() as conn:
        return (
            await conn.execute(text("SELECT state FROM jobs WHERE id = :i"), {"i": job_id})
        ).scalar()


async def test_concurrent_writes_share_commits_and_are_all_durable(
    store: JobStore, engine: AsyncEngine
) -> None:
    jobs = [_job() for _ in range(60)]
    before = DB_COMMITS._value.get()
    await asyncio.gather(*(store.create([j]) for j in jobs))
    commits = DB_COMMITS._value.get() - before
    assert commits < len(jobs) / 2  # most of them rode along another's commit
    for j in jobs:
        assert await _visible_elsewhere(engine, j.id) == "QUEUED"
    # Each write sees the ones committed with it before it: compare-and-set still holds.
    results = await asyncio.gather(
        *(store.transition(j.id, State.QUEUED, State.CANCELED) for j in jobs for _ in range(2))
    )
    assert results.count(State.QUEUED) == len(jobs)
    assert results.count(None) == len(jobs)
    for j in jobs:
        events = await store.events(j.id)
        assert [e.to_state for e in events] == [State.QUEUED, State.CANCELED]


async def test_a_failing_write_fails_alone(store: JobStore, engine: AsyncEngine) -> None:
    taken = _job()
    await store.create([taken])
    fresh = [_job() for _ in range(10)]

    def half_then_fail(conn: Connection, job_id: str) -> None:
        # One row written, then an error: that row must not be kept.
        conn.execute(insert(job_tags).values(job_id=job_id, key="x", value="y", job_seq=0))
        raise RuntimeError("refused")

    outcomes = await asyncio.gather(
        *(store.create([j]) for j in fresh[:5]),
        store.create([_job(taken.id)]),  # the same id again: refused by the database
        store.db.write(half_then_fail, taken.id),
        *(store.create([j]) for j in fresh[5:]),
        return_exceptions=True,
    )
    assert isinstance(outcomes[5], IntegrityError)
    assert isinstance(outcomes[6], RuntimeError)
    assert [o for i, o in enumerate(outcomes) if i not in (5, 6)] == [None] * 10
    for j in fresh:
        assert await _visible_elsewhere(engine, j.id) == "QUEUED"
    async with engine.connect() as conn:
        keys = (
            await conn.execute(select(job_tags.c.key).where(job_tags.c.job_id == taken.id))
        ).scalars()
        assert list(keys) == ["k"]


async def test_a_job_seen_queued_when_it_ended_is_recorded_running_on_the_way(
    store: JobStore,
) -> None:
    job = _job()
    await store.create([job])
    await store.claim([job.id])
    await store.transition(job.id, State.INITIALIZING, State.QUEUED, native_id="n1")
    before = DB_COMMITS._value.get()
    via = (State.QUEUED, State.RUNNING, "ran")
    moved = await store.transition(
        job.id, [State.RUNNING, State.QUEUED], State.COMPLETE, detail="complete", via=via
    )
    assert moved == State.QUEUED
    assert DB_COMMITS._value.get() - before == 1
    events = await store.events(job.id)
    assert [(e.from_state, e.to_state, e.detail) for e in events[-2:]] == [
        (State.QUEUED, State.RUNNING, "ran"),
        (State.RUNNING, State.COMPLETE, "complete"),
    ]
    assert events[-2].seq is not None and events[-1].seq is not None
    assert events[-2].seq < events[-1].seq
    # From RUNNING it is one plain event.
    other = _job()
    await store.create([other])
    await store.claim([other.id])
    await store.transition(other.id, State.INITIALIZING, State.RUNNING)
    await store.transition(other.id, [State.RUNNING, State.QUEUED], State.COMPLETE, via=via)
    assert [e.to_state for e in await store.events(other.id)] == [
        State.QUEUED,
        State.INITIALIZING,
        State.RUNNING,
        State.COMPLETE,
    ]
