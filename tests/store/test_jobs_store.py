"""The job store on SQLite and on PostgreSQL: the same suite against both."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from jobgate.domain.models import new_job_id
from jobgate.domain.states import IllegalTransition, State
from jobgate.store.database import migrate
from jobgate.store.jobs import JobStore, ListQuery, NewJob
from jobgate.store.schema import metadata


@pytest.fixture()
def store(engine: AsyncEngine) -> JobStore:
    return JobStore(engine)


def _job(name: str | None = None, tags: dict[str, str] | None = None, **kw: object) -> NewJob:
    spec: dict[str, object] = {"executors": [{"image": "a", "command": ["true"]}]}
    if name is not None:
        spec["name"] = name
    if tags is not None:
        spec["tags"] = tags
    return NewJob(id=new_job_id(), spec=spec, backend="local", **kw)  # type: ignore[arg-type]


async def test_create_then_get_round_trips_spec_and_times(store: JobStore) -> None:
    job = _job("hello", {"a": "1"})
    await store.create([job])
    rec = await store.get(job.id)
    assert rec is not None
    assert rec.spec == job.spec
    assert rec.state == State.QUEUED
    assert rec.created_at.tzinfo is not None
    assert abs(rec.created_at - job.created_at) < timedelta(seconds=1)
    assert await store.get("nope") is None


# SQLite's reflection cannot read an index on an expression (lower(name)): Alembic skips
# comparing those there, and says so; PostgreSQL compares them too.
@pytest.mark.filterwarnings(
    "ignore:autogenerate skipping metadata-specified expression-based index:UserWarning",
    "ignore:Skipped unsupported reflection of expression-based index:sqlalchemy.exc.SAWarning",
)
async def test_migrate_is_idempotent_and_matches_the_models(engine: AsyncEngine) -> None:
    await migrate(engine)  # a second start must not fail or change anything

    def diff(sync_conn: object) -> list[object]:
        ctx = MigrationContext.configure(sync_conn)  # type: ignore[arg-type]
        return list(compare_metadata(ctx, metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_pages_are_newest_first_complete_and_disjoint(store: JobStore) -> None:
    created = [_job(f"p{i}") for i in range(23)]
    for j in created:
        await store.create([j])
    seen: list[str] = []
    before = None
    while True:
        page, before = await store.page(ListQuery(limit=5, before_seq=before))
        seen += [r.id for r in page]
        if before is None:
            break
    assert seen == [j.id for j in reversed(created)]


async def test_name_prefix_is_literal_not_a_pattern(store: JobStore) -> None:
    names = ["a%b", "a_c", "abd", "a%bz", "x"]
    jobs = [_job(n) for n in names]
    await store.create(jobs)
    page, _ = await store.page(ListQuery(name_prefix="a%b"))
    assert sorted(r.id for r in page) == sorted([jobs[0].id, jobs[3].id])
    page, _ = await store.page(ListQuery(name_prefix="a_"))
    assert [r.id for r in page] == [jobs[1].id]


# The tag table of the TES spec: (filter, tags, match?).
TAG_TABLE = [
    ({"foo": "bar"}, {"foo": "bar"}, True),
    ({"foo": "bar"}, {"foo": "bat"}, False),
    ({"foo": ""}, {"foo": ""}, True),
    ({"foo": "bar", "baz": "bat"}, {"foo": "bar", "baz": "bat"}, True),
    ({"foo": "bar"}, {"foo": "bar", "baz": "bat"}, True),
    ({"foo": "bar", "baz": "bat"}, {"foo": "bar"}, False),
    ({"foo": ""}, {"foo": "bar"}, True),
    ({"foo": ""}, {}, False),
]


@pytest.mark.parametrize(("flt", "tags", "match"), TAG_TABLE)
async def test_tag_filter_follows_the_spec_table(
    store: JobStore, flt: dict[str, str], tags: dict[str, str], match: bool
) -> None:
    job = _job("t", tags)
    await store.create([job])
    page, _ = await store.page(ListQuery(tags=flt))
    assert ([r.id for r in page] == [job.id]) is match


async def test_state_and_owner_filters(store: JobStore) -> None:
    a, b = _job("a", owner="alice"), _job("b", owner="bob")
    await store.create([a, b])
    await store.transition(a.id, State.QUEUED, State.CANCELED, source="test")
    page, _ = await store.page(ListQuery(state=State.CANCELED))
    assert [r.id for r in page] == [a.id]
    page, _ = await store.page(ListQuery(owner="bob"))
    assert [r.id for r in page] == [b.id]


async def test_transition_is_compare_and_set_with_events(store: JobStore) -> None:
    job = _job()
    await store.create([job])
    assert await store.transition(job.id, State.QUEUED, State.INITIALIZING) == State.QUEUED
    # Someone else already moved it: the second claim must not succeed.
    assert await store.transition(job.id, State.QUEUED, State.INITIALIZING) is None
    assert await store.transition("missing", State.QUEUED, State.INITIALIZING) is None
    with pytest.raises(IllegalTransition):
        await store.transition(job.id, State.INITIALIZING, State.COMPLETE)
    await store.transition(job.id, State.INITIALIZING, State.RUNNING, native_id="n1")
    await store.transition(job.id, State.RUNNING, State.COMPLETE, detail="done", logs=[{"x": 1}])
    rec = await store.get(job.id)
    assert rec is not None
    assert (rec.state, rec.native_id, rec.logs, rec.detail) == (
        State.COMPLETE,
        "n1",
        [{"x": 1}],
        "done",
    )
    events = await store.events(job.id)
    assert [(e.from_state, e.to_state) for e in events] == [
        (None, "QUEUED"),
        ("QUEUED", "INITIALIZING"),
        ("INITIALIZING", "RUNNING"),
        ("RUNNING", "COMPLETE"),
    ]
    assert all(e.at.tzinfo is not None for e in events)


async def test_concurrent_claims_have_exactly_one_winner(store: JobStore) -> None:
    job = _job()
    await store.create([job])
    results = await asyncio.gather(
        *(store.transition(job.id, State.QUEUED, State.INITIALIZING) for _ in range(8))
    )
    assert sum(r is not None for r in results) == 1
    events = await store.events(job.id)
    assert [e.to_state for e in events].count("INITIALIZING") == 1


async def test_queued_orders_by_priority_then_age(store: JobStore) -> None:
    low, high, low2 = _job("l"), _job("h", priority=5), _job("l2")
    for j in (low, high, low2):
        await store.create([j])
    other = NewJob(id=new_job_id(), spec=low.spec, backend="slurm")
    await store.create([other])
    recs = await store.queued("local", limit=10)
    assert [r.id for r in recs] == [high.id, low.id, low2.id]


async def test_bulk_create_is_one_transaction(store: JobStore) -> None:
    ok = _job("ok")
    dup = NewJob(id=ok.id, spec=ok.spec, backend="local")  # same id: the batch must fail whole
    with pytest.raises(Exception):  # noqa: B017 - the driver's integrity error type varies
        await store.create([_job("first"), ok, dup])
    assert await store.count() == 0


async def test_in_states_and_delete_cascades(store: JobStore) -> None:
    a, b = _job("a", {"k": "v"}), _job("b")
    await store.create([a, b])
    await store.transition(a.id, State.QUEUED, State.INITIALIZING)
    assert [r.id for r in await store.in_states([State.INITIALIZING])] == [a.id]
    assert await store.delete(a.id)
    assert await store.get(a.id) is None
    assert await store.events(a.id) == []
    page, _ = await store.page(ListQuery(tags={"k": ""}))
    assert page == []


def test_created_at_defaults_to_utc_now() -> None:
    job = _job()
    assert job.created_at.tzinfo is UTC or job.created_at.utcoffset() == timedelta(0)
    assert datetime.now(UTC) - job.created_at < timedelta(seconds=5)


async def test_claim_takes_only_queued_jobs_once(store: JobStore) -> None:
    a, b, c = _job("a"), _job("b"), _job("c")
    await store.create([a, b, c])
    await store.transition(b.id, State.QUEUED, State.CANCELED)
    claimed = await store.claim([a.id, b.id, c.id, "missing"])
    assert sorted(claimed) == sorted([a.id, c.id])
    assert await store.claim([a.id, c.id]) == []  # a second dispatcher gets nothing
    rec = await store.get(a.id)
    assert rec is not None and (rec.state, rec.attempt) == (State.INITIALIZING, 1)
    events = await store.events(c.id)
    assert [(e.from_state, e.to_state, e.source) for e in events][-1] == (
        "QUEUED",
        "INITIALIZING",
        "dispatcher",
    )


async def test_listeners_see_every_committed_event_with_its_sequence(store: JobStore) -> None:
    seen: list[tuple[int | None, str, str | None]] = []
    store.listeners.append(lambda evs: seen.extend((e.seq, e.to_state, e.owner) for e in evs))
    a = _job("a", owner="alice")
    await store.create([a, _job("b")])
    await store.claim([a.id])
    await store.transition(a.id, State.INITIALIZING, State.RUNNING)
    assert [(s, o) for _, s, o in seen] == [
        ("QUEUED", "alice"),
        ("QUEUED", None),
        ("INITIALIZING", "alice"),
        ("RUNNING", "alice"),
    ]
    seqs = [q for q, _, _ in seen]
    assert all(q is not None for q in seqs) and seqs == sorted(seqs)
    # The same events can be read back after any sequence number (stream resumption).
    after = await store.events_after(seqs[1] or 0, owner="alice")
    assert [e.to_state for e in after] == ["INITIALIZING", "RUNNING"]


async def test_sequence_numbers_are_never_reused_after_a_delete(store: JobStore) -> None:
    a = _job("a")
    await store.create([a])
    await store.transition(a.id, State.QUEUED, State.CANCELED)
    last = max(e.seq or 0 for e in await store.events(a.id))
    assert await store.delete(a.id)  # the newest job and events are gone
    b = _job("b")
    await store.create([b])
    assert min(e.seq or 0 for e in await store.events(b.id)) > last
