"""Migration 0006 (service tokens, job credentials, share groups) goes down and up again."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command

from jobgate.store.database import _alembic_config, make_engine, migrate


async def test_0006_downgrades_and_upgrades(tmp_path: Path) -> None:
    db = tmp_path / "auth.db"
    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    await migrate(engine)

    def tables() -> set[str]:
        with sqlite3.connect(db) as conn:
            return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def columns() -> set[str]:
        with sqlite3.connect(db) as conn:
            return {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}

    assert {"service_tokens", "job_credentials"} <= tables() and "share_group" in columns()
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(_alembic_config(c), "0005"))
    assert not {"service_tokens", "job_credentials"} & tables()
    assert "share_group" not in columns()
    await migrate(engine)
    assert {"service_tokens", "job_credentials"} <= tables() and "share_group" in columns()
    await engine.dispose()
