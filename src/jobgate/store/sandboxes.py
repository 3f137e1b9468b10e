"""The ``sandboxes`` table (content-addressed uploads) and ``jobs.output_sandbox``.

The bytes live on disk under their sha256 (see :mod:`jobgate.service.sandboxes`); a row
records that a sandbox is complete, its size and who uploaded it first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from jobgate.domain.models import now
from jobgate.store.access import Database
from jobgate.store.schema import jobs, sandboxes


@dataclass(frozen=True, slots=True)
class SandboxRow:
    sha256: str
    size: int
    owner: str | None
    created_at: datetime


def _add(conn: Connection, sha256: str, size: int, owner: str | None) -> bool:
    try:
        # A savepoint: a duplicate key must not spoil the outer transaction (PostgreSQL).
        with conn.begin_nested():
            conn.execute(
                insert(sandboxes).values(sha256=sha256, size=size, owner=owner, created_at=now())
            )
    except IntegrityError:
        return False
    return True


def _get(conn: Connection, sha256: str) -> SandboxRow | None:
    row = conn.execute(select(sandboxes).where(sandboxes.c.sha256 == sha256)).first()
    if row is None:
        return None
    at = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    return SandboxRow(row.sha256, row.size, row.owner, at)


def _set_output(conn: Connection, job_id: str, sha256: str | None) -> None:
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(output_sandbox=sha256))


def _output_of(conn: Connection, job_id: str) -> str | None:
    value = conn.execute(select(jobs.c.output_sandbox).where(jobs.c.id == job_id)).scalar()
    return None if value is None else str(value)


class SandboxStore:
    """Async access to sandbox rows; each method is one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, sha256: str, size: int, owner: str | None) -> bool:
        """Record a sandbox; False when it was already recorded (the content is the same)."""
        return await self.db.write(_add, sha256, size, owner)

    async def get(self, sha256: str) -> SandboxRow | None:
        return await self.db.read(_get, sha256)

    async def set_output(self, job_id: str, sha256: str | None) -> None:
        """Set (or clear) the job's output sandbox."""
        await self.db.write(_set_output, job_id, sha256)

    async def output_of(self, job_id: str) -> str | None:
        return await self.db.read(_output_of, job_id)
