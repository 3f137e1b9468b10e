"""What webhook delivery reads from the store: the callback targets of jobs.

Reads a few JSON paths of the stored spec, not the whole spec (which may hold inline input
content of a megabyte), so routing a batch of events costs one small query.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, select

from jobgate.store.access import Database
from jobgate.store.schema import job_events, jobs

_CHUNK = 500  # ids per IN (...) list: well below SQLite's bound-parameter limit


@dataclass(frozen=True, slots=True)
class Target:
    """Where a job's events go, and what a receiver is told about the job."""

    url: str
    name: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


def _targets(conn: Connection, job_ids: Sequence[str]) -> dict[str, Target]:
    callback = jobs.c.spec["callback"].as_string()
    out: dict[str, Target] = {}
    for i in range(0, len(job_ids), _CHUNK):
        rows = conn.execute(
            select(jobs.c.id, jobs.c.name, callback.label("url"), jobs.c.spec["tags"].label("tags"))
            .where(jobs.c.id.in_(job_ids[i : i + _CHUNK]))
            .where(callback.is_not(None))
        ).all()
        for row in rows:
            tags: Any = row.tags
            out[row.id] = Target(row.url, row.name, dict(tags) if isinstance(tags, dict) else {})
    return out


def _max_event_seq(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(job_events.c.seq), 0))).scalar_one())


async def callback_targets(db: Database, job_ids: Sequence[str]) -> dict[str, Target]:
    """The targets of those of ``job_ids`` that exist and have a callback URL."""
    if not job_ids:
        return {}
    return await db.read(_targets, list(job_ids))


async def max_event_seq(db: Database) -> int:
    """The newest event's sequence number (0 when there are none)."""
    return await db.read(_max_event_seq)
