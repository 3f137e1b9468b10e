"""Engine creation (SQLite pragmas, PostgreSQL pool) and migrations at start-up."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

_HERE = Path(__file__).parent


def json_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, *, sqlite_synchronous: str = "NORMAL") -> AsyncEngine:
    """Create the async engine; for SQLite, enable WAL and the chosen durability level."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, json_serializer=json_dumps, connect_args={"timeout": 30})
        sqlite_pragmas(engine.sync_engine, sqlite_synchronous)
        return engine
    return create_async_engine(
        url, json_serializer=json_dumps, pool_size=10, max_overflow=20, pool_pre_ping=True
    )


def sqlite_pragmas(engine: Engine, synchronous: str) -> None:
    """WAL, the chosen durability, foreign keys and a generous busy timeout, per connection."""

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()


def _alembic_config(connection: Connection) -> Config:
    cfg = Config(str(_HERE / "alembic.ini"))
    cfg.set_main_option("script_location", str(_HERE / "migrations"))
    cfg.attributes["connection"] = connection
    return cfg


async def migrate(engine: AsyncEngine, *, legacy_owner: Callable[[str], str] | None = None) -> None:
    """Bring the schema to the newest revision (idempotent; safe at every start).

    ``legacy_owner`` names an owner written before owners had namespaces (migration 0007,
    run once); without it such owners go to the ``token`` namespace, ``admin`` to
    ``jobgate:admin``.
    """

    def _upgrade(connection: Connection) -> None:
        cfg = _alembic_config(connection)
        if legacy_owner is not None:
            cfg.attributes["legacy_owner"] = legacy_owner
        command.upgrade(cfg, "head")

    # Several processes may start at once on one database (API workers, dispatchers):
    # one migrates, the others wait for it, then find the schema at its head.
    async with _migration_lock(engine), engine.connect() as conn:
        if is_sqlite(engine):
            # Table rebuilds (batch migrations) drop the old table; with foreign keys on,
            # that DROP would cascade-delete every event and tag. The pragma only takes
            # effect outside a transaction, so it is set before the migration begins.
            await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        await conn.run_sync(_upgrade)
        await conn.commit()
        if is_sqlite(engine):
            await conn.exec_driver_sql("PRAGMA foreign_keys=ON")


_MIGRATION_LOCK = 0x6A6F6267  # PostgreSQL advisory lock key of jobgate's migrations


@asynccontextmanager
async def _migration_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    """Migrations one at a time: a PostgreSQL advisory lock, or a lock file beside the
    SQLite database."""
    if not is_sqlite(engine):
        async with engine.connect() as conn:
            await conn.exec_driver_sql(f"SELECT pg_advisory_lock({_MIGRATION_LOCK})")
            try:
                yield
            finally:
                await conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_MIGRATION_LOCK})")
        return
    path = engine.url.database
    if not path or path == ":memory:":
        yield
        return
    fd = os.open(f"{path}.migrate-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
