"""Upgrading a database that already holds jobs keeps every row."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command

from jobgate.domain.models import new_job_id
from jobgate.store.database import _alembic_config, make_engine, migrate


async def test_upgrade_from_0002_keeps_jobs_events_and_tags(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.upgrade(_alembic_config(c), "0002"))
    # Rows as the 0002 schema holds them (today's store writes columns 0002 lacks).
    conn = sqlite3.connect(db)
    spec = '{"executors":[{"image":"a","command":["true"]}],"tags":{"k":"v"}}'
    at = "2026-01-01 00:00:00.000000"
    for _ in range(3):
        job_id = new_job_id()
        conn.execute(
            "INSERT INTO jobs (id, state, backend, created_at, updated_at, spec)"
            " VALUES (?, 'QUEUED', 'local', ?, ?, ?)",
            (job_id, at, at, spec),
        )
        conn.execute("INSERT INTO job_tags (job_id, key, value) VALUES (?, 'k', 'v')", (job_id,))
        conn.execute(
            "INSERT INTO job_events (job_id, at, to_state, source) VALUES (?, ?, 'QUEUED', 'api')",
            (job_id, at),
        )
    conn.commit()
    conn.close()
    await migrate(engine)  # 0003 rebuilds tables on SQLite; 0004 fills job_tags.job_seq
    await engine.dispose()
    conn = sqlite3.connect(db)
    counts = [
        conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("jobs", "job_events", "job_tags")
    ]
    assert counts == [3, 3, 3]
    # Every tag knows its job's seq (label searches walk it).
    joined = "SELECT count(*) FROM job_tags t JOIN jobs j ON j.id = t.job_id AND j.seq = t.job_seq"
    assert conn.execute(joined).fetchone()[0] == 3
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
