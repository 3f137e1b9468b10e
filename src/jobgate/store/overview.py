"""The rows the dashboard's overview is computed from: recent events and backend facts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, func, select

from jobgate.store.access import Database
from jobgate.store.schema import job_events, jobs
from jobgate.store.visibility import Scope, scope_condition


@dataclass(frozen=True, slots=True)
class RecentEvent:
    at: datetime
    job_id: str
    from_state: str | None
    to_state: str
    job_created_at: datetime


@dataclass(frozen=True, slots=True)
class BackendError:
    backend: str
    detail: str | None
    at: datetime


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _first_seq_since(conn: Connection, since: datetime) -> int | None:
    """The first event seq at or after ``since``, found by bisecting seq (events are
    written in time order; ``at`` has no index, and a scan of millions would be slow)."""
    lo, hi = conn.execute(select(func.min(job_events.c.seq), func.max(job_events.c.seq))).one()
    if lo is None:
        return None

    def at_or_after(seq: int) -> tuple[int, datetime] | None:
        row = conn.execute(
            select(job_events.c.seq, job_events.c.at)
            .where(job_events.c.seq >= seq)
            .order_by(job_events.c.seq)
            .limit(1)
        ).first()
        return None if row is None else (row[0], _utc(row[1]))

    def reached(seq: int) -> bool:  # monotone in seq: the next event is in the window
        found = at_or_after(seq)
        return found is None or found[1] >= since

    lo, hi = lo, hi + 1
    while lo < hi:
        mid = (lo + hi) // 2
        if reached(mid):
            hi = mid
        else:
            lo = mid + 1
    first = at_or_after(lo)
    return None if first is None else first[0]


async def recent_events(
    db: Database, since: datetime, owner: Scope, limit: int
) -> tuple[list[RecentEvent], bool]:
    """Events of visible jobs from ``since`` on, oldest first (at most the newest
    ``limit``), and whether older ones in the window were left out."""
    return await db.read(_recent_events, since, owner, limit)


def _recent_events(
    conn: Connection, since: datetime, owner: Scope, limit: int
) -> tuple[list[RecentEvent], bool]:
    first = _first_seq_since(conn, since)
    if first is None:
        return [], False
    conds: list[Any] = [job_events.c.seq >= first]
    visible = scope_condition(owner)
    if visible is not None:
        conds.append(visible)
    rows = conn.execute(
        select(
            job_events.c.at,
            job_events.c.job_id,
            job_events.c.from_state,
            job_events.c.to_state,
            jobs.c.created_at,
        )
        .select_from(job_events.join(jobs, jobs.c.id == job_events.c.job_id))
        .where(and_(*conds))
        .order_by(job_events.c.seq.desc())
        .limit(limit + 1)
    ).all()
    truncated = len(rows) > limit
    out = [RecentEvent(_utc(r[0]), r[1], r[2], r[3], _utc(r[4])) for r in rows[:limit]]
    out.reverse()
    return out, truncated


async def last_errors(db: Database, backends: list[str], owner: Scope) -> list[BackendError]:
    """Each backend's newest SYSTEM_ERROR job the caller may see (with its detail)."""
    return await db.read(_last_errors, backends, owner)


def _last_errors(conn: Connection, backends: list[str], owner: Scope) -> list[BackendError]:
    out = []
    visible = scope_condition(owner)
    for name in backends:
        conds: list[Any] = [jobs.c.state == "SYSTEM_ERROR", jobs.c.backend == name]
        if visible is not None:
            conds.append(visible)
        row = conn.execute(
            select(jobs.c.detail, jobs.c.updated_at, jobs.c.created_at)
            .where(and_(*conds))
            .order_by(jobs.c.seq.desc())
            .limit(1)
        ).first()
        if row is not None:
            out.append(BackendError(name, row[0], _utc(row[1] or row[2])))
    return out


async def waiting(db: Database, owner: Scope, prefix: str) -> dict[str, int]:
    """Per backend, the visible QUEUED jobs whose detail starts with ``prefix`` (those a
    backend refused for now: it is unreachable or busy)."""
    return await db.read(_waiting, owner, prefix)


def _waiting(conn: Connection, owner: Scope, prefix: str) -> dict[str, int]:
    conds: list[Any] = [jobs.c.state == "QUEUED", jobs.c.detail.startswith(prefix, autoescape=True)]
    visible = scope_condition(owner)
    if visible is not None:
        conds.append(visible)
    rows = conn.execute(
        select(jobs.c.backend, func.count()).where(and_(*conds)).group_by(jobs.c.backend)
    ).all()
    return {r[0]: r[1] for r in rows}
