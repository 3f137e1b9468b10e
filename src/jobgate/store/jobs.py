"""The job store: create, read, page, and the one place where states change.

Every state change is a compare-and-set on the current state, checked against
:data:`jobgate.domain.states.TRANSITIONS`, and writes an event row in the same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, and_, delete, exists, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from jobgate.domain.models import JobEvent, JobRecord, now
from jobgate.domain.states import State, check_transition
from jobgate.store.database import is_sqlite
from jobgate.store.schema import job_events, job_tags, jobs

_FULL_COLUMNS = (
    jobs.c.seq,
    jobs.c.id,
    jobs.c.state,
    jobs.c.spec,
    jobs.c.logs,
    jobs.c.created_at,
    jobs.c.owner,
    jobs.c.backend,
    jobs.c.priority,
    jobs.c.attempt,
    jobs.c.native_id,
    jobs.c.detail,
)


@dataclass(frozen=True, slots=True)
class ListQuery:
    """Filters for :meth:`JobStore.list`. ``tags`` maps key → value; ``""`` matches any value."""

    name_prefix: str | None = None
    state: State | None = None
    tags: dict[str, str] = field(default_factory=dict)
    owner: str | None = None
    limit: int = 256
    before_seq: int | None = None
    """Keyset cursor: only jobs older than this sequence number (paging newest-first)."""


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to insert; ``spec`` is the client's task JSON without server fields."""

    id: str
    spec: dict[str, Any]
    backend: str
    owner: str | None = None
    priority: int = 0
    state: State = State.QUEUED
    created_at: datetime = field(default_factory=now)


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything stored is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _record(row: Row[Any] | Any) -> JobRecord:
    m = row._mapping
    return JobRecord(
        id=m["id"],
        state=State(m["state"]),
        spec=m["spec"],
        logs=m["logs"],
        created_at=_aware(m["created_at"]),
        owner=m["owner"],
        backend=m["backend"],
        priority=m["priority"],
        attempt=m["attempt"],
        native_id=m["native_id"],
        detail=m["detail"],
    )


class JobStore:
    """Async access to jobs. Safe to share across tasks of one event loop."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # SQLite allows one writer; serialising writers here avoids SQLITE_BUSY on
        # read-to-write upgrades. PostgreSQL needs no such lock.
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if is_sqlite(engine) else None

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock, self.engine.begin() as conn:
            yield conn

    # -- create ------------------------------------------------------------------------

    async def create(
        self,
        new_jobs: Sequence[NewJob],
        *,
        source: str = "api",
        details: Sequence[str] | None = None,
    ) -> None:
        """Insert jobs with their tags and creation events in one transaction.

        ``details`` (aligned with ``new_jobs``) annotates each creation event.
        Returns only after the commit: a job acknowledged to a client is on disk.
        """
        if not new_jobs:
            return
        job_rows = []
        tag_rows = []
        event_rows = []
        for n, j in enumerate(new_jobs):
            job_rows.append(
                {
                    "id": j.id,
                    "state": j.state.value,
                    "name": j.spec.get("name"),
                    "owner": j.owner,
                    "backend": j.backend,
                    "priority": j.priority,
                    "attempt": 0,
                    "created_at": j.created_at,
                    "updated_at": j.created_at,
                    "spec": j.spec,
                    "logs": None,
                }
            )
            for k, v in (j.spec.get("tags") or {}).items():
                tag_rows.append({"job_id": j.id, "key": k, "value": v})
            event_rows.append(
                {
                    "job_id": j.id,
                    "at": j.created_at,
                    "from_state": None,
                    "to_state": j.state.value,
                    "detail": details[n] if details else "submitted",
                    "source": source,
                }
            )
        async with self._writing() as conn:
            await conn.execute(insert(jobs), job_rows)
            if tag_rows:
                await conn.execute(insert(job_tags), tag_rows)
            await conn.execute(insert(job_events), event_rows)

    # -- read --------------------------------------------------------------------------

    async def get(self, job_id: str) -> JobRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(*_FULL_COLUMNS).where(jobs.c.id == job_id))).first()
        return None if row is None else _record(row)

    async def page(
        self, query: ListQuery, *, minimal: bool = False
    ) -> tuple[list[JobRecord], int | None]:
        """One page, newest first. Returns the page and the cursor for the next one (or None).

        Keyset paging on ``seq``: the cost of a page does not grow with how deep it is.
        """
        cols = (
            (jobs.c.seq, jobs.c.id, jobs.c.state, jobs.c.created_at) if minimal else _FULL_COLUMNS
        )
        stmt = select(*cols)
        conds = []
        if query.before_seq is not None:
            conds.append(jobs.c.seq < query.before_seq)
        if query.state is not None:
            conds.append(jobs.c.state == query.state.value)
        if query.owner is not None:
            conds.append(jobs.c.owner == query.owner)
        if query.name_prefix:
            # A range, not LIKE: no wildcard escaping, and the (name, seq) index applies.
            conds.append(jobs.c.name >= query.name_prefix)
            conds.append(jobs.c.name < query.name_prefix + "\U0010ffff")
        for key, value in query.tags.items():
            tag = and_(job_tags.c.job_id == jobs.c.id, job_tags.c.key == key)
            if value != "":
                tag = and_(tag, job_tags.c.value == value)
            conds.append(exists().where(tag))
        if conds:
            stmt = stmt.where(and_(*conds))
        stmt = stmt.order_by(jobs.c.seq.desc()).limit(query.limit + 1)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        if minimal:
            records = [
                JobRecord(
                    id=r.id,
                    state=State(r.state),
                    spec={},
                    logs=None,
                    created_at=_aware(r.created_at),
                )
                for r in rows
            ]
        else:
            records = [_record(r) for r in rows]
        return records, (rows[-1].seq if more and rows else None)

    async def in_states(
        self, states: Iterable[State], backend: str | None = None
    ) -> list[JobRecord]:
        """All jobs in the given states (for recovery and reconciliation), oldest first."""
        stmt = select(*_FULL_COLUMNS).where(jobs.c.state.in_([s.value for s in states]))
        if backend is not None:
            stmt = stmt.where(jobs.c.backend == backend)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt.order_by(jobs.c.seq))).all()
        return [_record(r) for r in rows]

    async def queued(self, backend: str, limit: int) -> list[JobRecord]:
        """Queued jobs of a backend in dispatch order: priority, then age."""
        stmt = (
            select(*_FULL_COLUMNS)
            .where(jobs.c.state == State.QUEUED.value, jobs.c.backend == backend)
            .order_by(jobs.c.priority.desc(), jobs.c.seq)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_record(r) for r in rows]

    async def events(self, job_id: str) -> list[JobEvent]:
        """A job's state changes, oldest first (the first one is its creation)."""
        stmt = select(job_events).where(job_events.c.job_id == job_id).order_by(job_events.c.seq)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            JobEvent(
                job_id=r.job_id,
                at=_aware(r.at),
                from_state=r.from_state,
                to_state=r.to_state,
                detail=r.detail,
                source=r.source,
            )
            for r in rows
        ]

    async def count(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(jobs))).scalar_one())

    # -- change ------------------------------------------------------------------------

    async def transition(
        self,
        job_id: str,
        expected: State | Iterable[State],
        to: State,
        *,
        detail: str | None = None,
        source: str = "dispatcher",
        **values: Any,
    ) -> State | None:
        """Move ``job_id`` to ``to`` if it is currently in ``expected``; record an event.

        ``values`` sets other columns in the same write (``logs``, ``native_id``, …).
        Returns the state the job was in, or ``None`` when it was not in ``expected``
        (someone else moved it first) or does not exist. Raises ``IllegalTransition`` if
        the table forbids ``expected → to``.
        """
        sources = [expected] if isinstance(expected, State) else list(expected)
        for s in sources:
            check_transition(s, to)
        at = now()
        async with self._writing() as conn:
            # A compare-and-set per expected state, no SELECT first: one statement (and,
            # on SQLite, three fewer thread hops) in the common single-source case.
            for current in sources:
                result = await conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id, jobs.c.state == current.value)
                    .values(state=to.value, updated_at=at, detail=detail, **values)
                )
                if result.rowcount == 1:
                    break
            else:
                return None
            await conn.execute(
                insert(job_events).values(
                    job_id=job_id,
                    at=at,
                    from_state=current.value,
                    to_state=to.value,
                    detail=detail,
                    source=source,
                )
            )
        return current

    async def update(self, job_id: str, **values: Any) -> None:
        """Set columns without a state change (e.g. logs while a job runs)."""
        async with self._writing() as conn:
            await conn.execute(
                update(jobs).where(jobs.c.id == job_id).values(updated_at=now(), **values)
            )

    async def delete(self, job_id: str) -> bool:
        async with self._writing() as conn:
            result = await conn.execute(delete(jobs).where(jobs.c.id == job_id))
        return bool(result.rowcount)
