"""Dispatcher leases: which dispatcher processes live, and which of them drives each job.

Every dispatcher process has a row in ``dispatchers`` that it renews while it lives
(``lease_until``). A claim writes the claiming dispatcher into the job (``jobs.dispatcher``).
A job is *orphaned* when it is active (INITIALIZING, RUNNING, CANCELING, or QUEUED in a
backend's queue) and its dispatcher has no row: the dead dispatcher's row is removed first
(:meth:`Leases.bury`), then one live dispatcher takes the orphans (:meth:`Leases.adopt`),
a compare-and-set per job, so two dispatchers never both take one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, exists, insert, or_, select, update

from jobgate.domain.models import now
from jobgate.domain.states import ACTIVE, State
from jobgate.store.access import Database
from jobgate.store.schema import dispatchers, jobs


@dataclass(frozen=True, slots=True)
class DispatcherRow:
    """A dispatcher process as recorded: where it runs and until when its lease holds."""

    id: str
    host: str
    boot_id: str
    pid: int
    pid_start: int
    started_at: datetime
    lease_until: datetime
    roles: frozenset[str] = frozenset()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _row(r: Any) -> DispatcherRow:
    return DispatcherRow(
        id=r.id,
        host=r.host,
        boot_id=r.boot_id,
        pid=r.pid,
        pid_start=r.pid_start,
        started_at=_aware(r.started_at),
        lease_until=_aware(r.lease_until),
        roles=frozenset(r.roles.split()),
    )


def _register(conn: Connection, row: DispatcherRow) -> None:
    conn.execute(
        insert(dispatchers).values(
            id=row.id,
            host=row.host,
            boot_id=row.boot_id,
            pid=row.pid,
            pid_start=row.pid_start,
            started_at=row.started_at,
            lease_until=row.lease_until,
            roles=" ".join(sorted(row.roles)),
        )
    )


def _renew(conn: Connection, dispatcher_id: str, until: datetime) -> bool:
    stmt = update(dispatchers).where(dispatchers.c.id == dispatcher_id)
    return bool(conn.execute(stmt.values(lease_until=until)).rowcount)


def _all(conn: Connection) -> list[DispatcherRow]:
    return [_row(r) for r in conn.execute(select(dispatchers).order_by(dispatchers.c.started_at))]


def _bury(conn: Connection, rows: Sequence[tuple[str, datetime]]) -> list[str]:
    """Delete each (id, lease_until) row still as observed: a dispatcher that renewed in
    the meantime is alive after all and keeps its row."""
    gone = []
    for dispatcher_id, lease_until in rows:
        stmt = delete(dispatchers).where(
            dispatchers.c.id == dispatcher_id, dispatchers.c.lease_until == lease_until
        )
        if conn.execute(stmt).rowcount:
            gone.append(dispatcher_id)
    return gone


def _driven() -> Any:
    """Jobs a dispatcher drives: active, or in a backend's queue (QUEUED with a native id)."""
    return or_(
        jobs.c.state.in_([s.value for s in ACTIVE]),
        and_(jobs.c.state == State.QUEUED.value, jobs.c.native_id.is_not(None)),
    )


def _adopt(conn: Connection, me: str) -> list[str]:
    alive = exists().where(dispatchers.c.id == jobs.c.dispatcher)
    stmt = (
        update(jobs)
        .where(_driven(), or_(jobs.c.dispatcher.is_(None), ~alive))
        .values(dispatcher=me)
        .returning(jobs.c.id)
    )
    return list(conn.execute(stmt).scalars())


def _take_role(conn: Connection, me: str, role: str) -> bool:
    """Give ``role`` to ``me`` unless a live dispatcher holds it; whether ``me`` holds it."""
    # Serialize role changes first: on PostgreSQL by locking every row, on SQLite by
    # writing at once (its one writer then holds the database until the commit).
    if conn.dialect.name == "sqlite":
        lock = update(dispatchers).where(dispatchers.c.id == me)
        conn.execute(lock.values(roles=dispatchers.c.roles))
    else:
        conn.execute(select(dispatchers.c.id).order_by(dispatchers.c.id).with_for_update())
    rows = _all(conn)
    mine = next((r for r in rows if r.id == me), None)
    if mine is None:
        return False
    holder = next((r for r in rows if role in r.roles), None)
    if holder is not None:
        return holder.id == me
    roles = " ".join(sorted({*mine.roles, role}))
    conn.execute(update(dispatchers).where(dispatchers.c.id == me).values(roles=roles))
    return True


def _leave(conn: Connection, dispatcher_id: str) -> None:
    conn.execute(delete(dispatchers).where(dispatchers.c.id == dispatcher_id))


class Leases:
    """The ``dispatchers`` table and the ``jobs.dispatcher`` column."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def register(self, row: DispatcherRow) -> None:
        await self.db.write(_register, row)

    async def renew(self, dispatcher_id: str, until: datetime) -> bool:
        """Extend a lease; False when the row is gone (another dispatcher took this one
        for dead and adopted its jobs)."""
        return await self.db.write(_renew, dispatcher_id, until)

    async def all(self) -> list[DispatcherRow]:
        """Every recorded dispatcher, oldest first."""
        return await self.db.read(_all)

    async def bury(self, rows: Sequence[DispatcherRow]) -> list[str]:
        """Remove the rows of dispatchers found dead (each only if unchanged since read)."""
        if not rows:
            return []
        return await self.db.write(_bury, [(r.id, r.lease_until) for r in rows])

    async def adopt(self, me: str) -> list[str]:
        """Make ``me`` the dispatcher of every orphaned job; the ids taken."""
        return await self.db.write(_adopt, me)

    async def take_role(self, me: str, role: str) -> bool:
        """Hold ``role`` unless another live dispatcher does; whether ``me`` holds it."""
        return await self.db.write(_take_role, me, role)

    async def leave(self, dispatcher_id: str) -> None:
        """Remove a stopping dispatcher's row (its jobs become orphans at once)."""
        await self.db.write(_leave, dispatcher_id)


def lease_end(seconds: float) -> datetime:
    """The end of a lease taken now for ``seconds``."""
    return now() + timedelta(seconds=seconds)
