"""A gateway without HTTP: a real store (SQLite), the real dispatcher and job service,
and fake backends, so the dispatcher's logic is tested in-process and fast."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jobgate.backends.base import Backend
from jobgate.config import Settings
from jobgate.dispatcher import Dispatcher, DispatchSettings
from jobgate.domain.models import JobRecord, TaskSpec
from jobgate.domain.states import FINAL, State
from jobgate.service.jobs import JobService
from jobgate.staging import Stager
from jobgate.store.access import Database
from jobgate.store.database import make_engine, migrate
from jobgate.store.jobs import JobStore
from tests.dispatcher.fake import FakeBackend


@dataclass
class Gateway:
    store: JobStore
    dispatcher: Dispatcher
    jobs: JobService
    settings: DispatchSettings

    async def submit(self, **task: Any) -> str:
        spec = {"executors": [{"image": "x", "command": ["echo", "hi"]}], **task}
        return await self.jobs.submit(TaskSpec.model_validate(spec))

    async def get(self, job_id: str) -> JobRecord:
        return await self.jobs.get(job_id)

    async def until(
        self, job_id: str, check: Callable[[JobRecord], bool], within: float = 10
    ) -> JobRecord:
        deadline = time.monotonic() + within
        rec = await self.get(job_id)
        while not check(rec):
            assert time.monotonic() < deadline, f"job {job_id} is {rec.state}: {rec.detail}"
            await asyncio.sleep(0.02)
            rec = await self.get(job_id)
        return rec

    async def final(self, job_id: str, within: float = 10) -> JobRecord:
        return await self.until(job_id, lambda r: r.state in FINAL, within)

    async def states(self, job_id: str) -> list[State]:
        return [e.to_state for e in await self.store.events(job_id)]


Start = Callable[..., Awaitable[Gateway]]


@pytest.fixture()
async def gateway(tmp_path: Path) -> AsyncIterator[Start]:
    """``await gateway(backends)`` starts a gateway over ``backends`` (the first is the
    default); a second call restarts it on the same database (a gateway restart)."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
    await migrate(engine)
    store = JobStore(Database(engine))
    running: list[Dispatcher] = []
    stagers: list[Stager] = []

    async def start(backends: Mapping[str, Backend], **options: Any) -> Gateway:
        for d in running:
            await d.stop()
        running.clear()
        settings = DispatchSettings(
            **{
                "jobs_dir": tmp_path / "jobs",
                "logs_dir": tmp_path / "logs",
                "poll_interval": 0.05,
                **options.pop("dispatch", {}),
            }
        )
        stager = Stager.from_settings(Settings(data_dir=tmp_path / "data"))
        stagers.append(stager)
        dispatcher = Dispatcher(store, backends, stager, settings, **options)
        jobs = JobService(
            store,
            backends=backends,
            default_backend=next(iter(backends)),
            max_content_bytes=1 << 20,
            notifier=dispatcher,
        )
        await dispatcher.start()
        running.append(dispatcher)
        return Gateway(store, dispatcher, jobs, settings)

    yield start
    for d in running:
        await d.stop()
    for s in stagers:
        await s.aclose()
    store.close()
    await engine.dispose()


@pytest.fixture()
def fake() -> FakeBackend:
    return FakeBackend()
