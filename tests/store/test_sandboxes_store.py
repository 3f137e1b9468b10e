"""The sandboxes table and jobs.output_sandbox, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from jobgate.domain.models import new_job_id
from jobgate.store.access import Database
from jobgate.store.jobs import JobStore, NewJob
from jobgate.store.sandboxes import SandboxStore


async def test_add_is_idempotent_per_content(engine: AsyncEngine) -> None:
    db = Database(engine)
    store = SandboxStore(db)
    sha = "ab" * 32
    # Concurrent first uploads of the same content: exactly one creates the row.
    created = await asyncio.gather(*(store.add(sha, 10, "alice") for _ in range(5)))
    assert sorted(created) == [False, False, False, False, True]
    row = await store.get(sha)
    assert row is not None
    assert (row.sha256, row.size, row.owner) == (sha, 10, "alice")
    assert row.created_at.tzinfo is not None
    assert await store.get("cd" * 32) is None
    db.close()


async def test_job_output_sandbox(engine: AsyncEngine) -> None:
    db = Database(engine)
    jobs, store = JobStore(db), SandboxStore(db)
    job = NewJob(id=new_job_id(), spec={"executors": []}, backend="local")
    await jobs.create([job])
    assert await store.output_of(job.id) is None
    await store.set_output(job.id, "ef" * 32)
    assert await store.output_of(job.id) == "ef" * 32
    await store.set_output(job.id, None)
    assert await store.output_of(job.id) is None
    assert await store.output_of("no-such-job") is None
    db.close()
