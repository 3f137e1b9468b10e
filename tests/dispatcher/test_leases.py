"""Dispatcher leases, in-process: two dispatchers on one database, one of them stops
renewing (as a hung or partitioned process does); the other adopts its jobs once the
lease has run out, never before; a dispatcher whose row was taken gives up at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from jobgate.config import Settings
from jobgate.dispatcher import Dispatcher, DispatchSettings
from jobgate.dispatcher.lease import Lease, Process
from jobgate.domain.models import TaskSpec, now
from jobgate.domain.states import State
from jobgate.service.jobs import JobService
from jobgate.staging import Stager
from jobgate.store.access import Database
from jobgate.store.database import make_engine, migrate
from jobgate.store.jobs import JobStore
from jobgate.store.leases import DispatcherRow, Leases
from tests.dispatcher.fake import FakeBackend

LEASE = 3.0


@pytest.fixture()
async def store(tmp_path: Path) -> AsyncIterator[JobStore]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
    await migrate(engine)
    s = JobStore(Database(engine))
    yield s
    s.close()
    await engine.dispose()


def _dispatcher(
    store: JobStore, tmp_path: Path, fake: FakeBackend, **options: object
) -> Dispatcher:
    settings = DispatchSettings(
        jobs_dir=tmp_path / "jobs",
        logs_dir=tmp_path / "logs",
        poll_interval=0.05,
        lease_seconds=LEASE,
    )
    stager = Stager.from_settings(Settings(data_dir=tmp_path / "data"))
    return Dispatcher(store, {"fake": fake}, stager, settings, **options)  # type: ignore[arg-type]


async def _until(check: object, within: float) -> None:
    deadline = time.monotonic() + within
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_dispatcher_that_stops_renewing_has_its_jobs_adopted_after_its_lease(
    store: JobStore, tmp_path: Path
) -> None:
    fake = FakeBackend()
    first = _dispatcher(store, tmp_path, fake)
    await first.start()
    jobs = JobService(
        store,
        backends={"fake": fake},
        default_backend="fake",
        max_content_bytes=1 << 20,
        notifier=first,
    )
    spec = TaskSpec.model_validate({"executors": [{"image": "x", "command": ["true"]}]})
    job_id = await jobs.submit(spec)

    async def submitted() -> bool:
        rec = await store.get(job_id)
        return rec is not None and rec.native_id is not None

    await _until(submitted, 10)
    # The first dispatcher hangs: nothing of it runs any more, its row stays.
    for task in [*first._loops, *(d.task for d in first._drives.values() if d.task)]:
        task.cancel()
    hung_at = time.monotonic()

    second = _dispatcher(store, tmp_path, fake)
    await second.start()
    try:
        rec = await store.get(job_id)
        assert rec is not None and rec.state == State.QUEUED
        assert rec.dispatcher == first.id  # its lease still holds: not taken yet

        async def adopted() -> bool:
            r = await store.get(job_id)
            return r is not None and r.dispatcher == second.id

        await _until(adopted, LEASE * 3)
        # Not before the lease ran out.
        assert time.monotonic() - hung_at >= LEASE - LEASE / 3 - 0.5
        fake.move(fake.native_of(job_id), State.COMPLETE)

        async def complete() -> bool:
            r = await store.get(job_id)
            return r is not None and r.state == State.COMPLETE

        await _until(complete, 10)
        assert fake.calls.submits.count(job_id) == 1  # followed, never sent again
        assert [r.id for r in await Leases(store.db).all()] == [second.id]
    finally:
        await second.stop()


async def test_a_dispatcher_of_this_host_whose_process_is_gone_is_dead_at_once(
    store: JobStore, tmp_path: Path
) -> None:
    here = Process.this()
    leases = Leases(store.db)
    # A dispatcher of this boot whose process exited (no process runs since that start).
    await leases.register(
        DispatcherRow(
            id="gone",
            host=here.host,
            boot_id=here.boot_id,
            pid=here.pid,
            pid_start=here.pid_start + 1,
            started_at=now(),
            lease_until=now() + timedelta(hours=1),
        )
    )
    # One on another host, its lease valid: alive as far as anyone here can tell.
    await leases.register(
        DispatcherRow(
            id="elsewhere",
            host="other-host",
            boot_id="x",
            pid=1,
            pid_start=1,
            started_at=now(),
            lease_until=now() + timedelta(hours=1),
        )
    )
    lease = Lease(leases, LEASE)
    await lease.take()
    await lease.orphans()
    assert sorted(r.id for r in await leases.all()) == sorted(["elsewhere", lease.id])


async def test_a_dispatcher_whose_row_was_taken_gives_up_its_jobs(
    store: JobStore, tmp_path: Path
) -> None:
    lost = asyncio.Event()
    d = _dispatcher(store, tmp_path, FakeBackend(), on_lease_lost=lost.set)
    await d.start()
    try:
        await Leases(store.db).leave(d.id)  # as a peer that took it for dead
        async with asyncio.timeout(LEASE):
            await lost.wait()
    finally:
        await d.stop()
