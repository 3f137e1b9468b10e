"""Upgrading a database that already holds jobs keeps every row."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command

from jobgate.domain.models import new_job_id
from jobgate.store.database import _alembic_config, make_engine, migrate
from jobgate.store.jobs import JobStore, NewJob


async def test_upgrade_from_0002_keeps_jobs_events_and_tags(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.upgrade(_alembic_config(c), "0002"))
    store = JobStore(engine)
    spec = {"executors": [{"image": "a", "command": ["true"]}], "tags": {"k": "v"}}
    await store.create([NewJob(id=new_job_id(), spec=spec, backend="local") for _ in range(3)])
    store.close()
    await migrate(engine)  # 0003 rebuilds tables on SQLite
    await engine.dispose()
    conn = sqlite3.connect(db)
    counts = [
        conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("jobs", "job_events", "job_tags")
    ]
    assert counts == [3, 3, 3]
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
