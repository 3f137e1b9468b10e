"""DiracX queries over the jobs table: job numbers (``seq``), offset pages with a total,
and summaries. Conditions come as (attribute, column or label, operator, values) from the
service, already translated from DiracX names."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    case,
    exists,
    func,
    literal,
    not_,
    or_,
    select,
)

from jobgate.domain.states import FINAL, State
from jobgate.store.access import Database
from jobgate.store.schema import job_events, job_tags, jobs
from jobgate.store.visibility import Scope, scope_condition

COLUMNS: dict[str, Any] = {
    "seq": jobs.c.seq,
    "id": jobs.c.id,
    "state": jobs.c.state,
    "detail": jobs.c.detail,
    "app_status": jobs.c.app_status,
    "owner": jobs.c.owner,
    "name": jobs.c.name,
    "created_at": jobs.c.created_at,
    "updated_at": jobs.c.updated_at,
    "priority": jobs.c.priority,
    "reschedules": jobs.c.reschedules,
    "heartbeat_at": jobs.c.heartbeat_at,
    "stalled": jobs.c.stalled,
}


@dataclass(frozen=True, slots=True)
class Cond:
    """``column`` (a key of :data:`COLUMNS`) or ``label`` compared by ``op`` with ``values``.

    ``op``: eq, neq, gt, lt (one value), in, not_in (many), like, not_like (SQL wildcards
    ``%`` and ``_``, case-insensitive as with DiracX's MySQL collation).
    """

    op: str
    values: tuple[Any, ...]
    column: str | None = None
    label: str | None = None


def _compare(col: Any, op: str, values: tuple[Any, ...]) -> ColumnElement[bool]:
    if op == "in":
        return col.in_(values) if values else literal(False)
    if op == "not_in":
        return or_(not_(col.in_(values)), col.is_(None)) if values else literal(True)
    v = values[0]
    if op == "eq":
        return col == v  # type: ignore[no-any-return]
    if op == "neq":
        return or_(col != v, col.is_(None))
    if op == "gt":
        return col > v  # type: ignore[no-any-return]
    if op == "lt":
        return col < v  # type: ignore[no-any-return]
    if op == "like":
        return col.ilike(v)  # type: ignore[no-any-return]
    if op == "not_like":
        return or_(not_(col.ilike(v)), col.is_(None))
    raise ValueError(f"unknown operator {op!r}")


def condition(c: Cond) -> ColumnElement[bool]:
    if c.column is not None:
        return _compare(COLUMNS[c.column], c.op, c.values)
    tag = and_(job_tags.c.job_id == jobs.c.id, job_tags.c.key == c.label)
    if c.op in ("neq", "not_in", "not_like"):
        positive = {"neq": "eq", "not_in": "in", "not_like": "like"}[c.op]
        return not_(exists().where(tag, _compare(job_tags.c.value, positive, c.values)))
    return exists().where(tag, _compare(job_tags.c.value, c.op, c.values))


def _where(conds: Sequence[Cond], scope: Scope) -> list[ColumnElement[bool]]:
    out = [condition(c) for c in conds]
    visible = scope_condition(scope)
    if visible is not None:
        out.append(visible)
    return out


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _labels(conn: Connection, ids: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for start in range(0, len(ids), 500):
        rows = conn.execute(
            select(job_tags.c.job_id, job_tags.c.key, job_tags.c.value).where(
                job_tags.c.job_id.in_(ids[start : start + 500])
            )
        ).all()
        for job_id, key, value in rows:
            out[job_id][key] = value
    return out


def _page(
    conn: Connection,
    conds: Sequence[Cond],
    sort: Sequence[tuple[str, str]],
    offset: int,
    limit: int,
    scope: Scope,
) -> tuple[int, list[dict[str, Any]]]:
    where = _where(conds, scope)
    total = conn.execute(select(func.count()).select_from(jobs).where(*where)).scalar_one()
    order = [
        COLUMNS[col].asc() if direction == "asc" else COLUMNS[col].desc() for col, direction in sort
    ]
    order.append(jobs.c.seq.asc())
    cols = [COLUMNS[k].label(k) for k in COLUMNS]
    rows = conn.execute(
        select(*cols).where(*where).order_by(*order).offset(offset).limit(limit)
    ).all()
    items = [dict(r._mapping) for r in rows]
    ids = [r["id"] for r in items]
    labels = _labels(conn, ids)
    times = _run_times(conn, ids)
    for item in items:
        item["created_at"] = _aware(item["created_at"])
        item["updated_at"] = _aware(item["updated_at"])
        item["labels"] = labels.get(item["id"], {})
        item["started_at"], item["ended_at"] = times.get(item["id"], (None, None))
    return total, items


def _run_times(
    conn: Connection, ids: list[str]
) -> dict[str, tuple[datetime | None, datetime | None]]:
    """When each job's last run started (its latest RUNNING) and when it last ended."""
    out: dict[str, tuple[datetime | None, datetime | None]] = {}
    if not ids:
        return out
    final = [s.value for s in FINAL]
    start = func.max(case((job_events.c.to_state == State.RUNNING.value, job_events.c.at)))
    end = func.max(case((job_events.c.to_state.in_(final), job_events.c.at)))
    rows = conn.execute(
        select(job_events.c.job_id, start, end)
        .where(job_events.c.job_id.in_(ids))
        .group_by(job_events.c.job_id)
    ).all()
    for job_id, started, ended in rows:
        start_at = None if started is None else _aware(started)
        end_at = None if ended is None else _aware(ended)
        if start_at is not None and end_at is not None and end_at < start_at:
            end_at = None  # running again since that end (rescheduled)
        out[job_id] = (start_at, end_at)
    return out


def _summary(
    conn: Connection,
    group: Sequence[tuple[str | None, str | None]],
    conds: Sequence[Cond],
    scope: Scope,
) -> list[dict[str, Any]]:
    source: Any = jobs
    cols = []
    for i, (column, label) in enumerate(group):
        if column is not None:
            cols.append(COLUMNS[column].label(f"_g{i}"))
        else:
            tags = job_tags.alias(f"g{i}")
            source = source.outerjoin(tags, and_(tags.c.job_id == jobs.c.id, tags.c.key == label))
            cols.append(tags.c.value.label(f"_g{i}"))
    n = func.count().label("count")
    stmt = select(*cols, n).select_from(source).where(*_where(conds, scope))
    if cols:
        stmt = stmt.group_by(*(c.name for c in cols))
    rows = conn.execute(stmt.order_by(n.desc())).all()
    return [
        {**{f"_g{i}": r._mapping[f"_g{i}"] for i in range(len(cols))}, "count": r.count}
        for r in rows
    ]


def _ids_of(conn: Connection, seqs: Sequence[int]) -> dict[int, str]:
    rows = conn.execute(select(jobs.c.seq, jobs.c.id).where(jobs.c.seq.in_(list(seqs)))).all()
    return {int(seq): str(job_id) for seq, job_id in rows}


def _seqs_of(conn: Connection, ids: Sequence[str]) -> dict[str, int]:
    rows = conn.execute(select(jobs.c.id, jobs.c.seq).where(jobs.c.id.in_(list(ids)))).all()
    return {str(job_id): int(seq) for job_id, seq in rows}


class DiracxQueries:
    """Async access for the DiracX router; each method is one read transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def page(
        self,
        conds: Sequence[Cond],
        sort: Sequence[tuple[str, str]],
        *,
        offset: int,
        limit: int,
        scope: Scope = None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """The total of matching jobs, and ``limit`` of them from ``offset`` in ``sort``
        order (then by ``seq``), each a dict of :data:`COLUMNS` plus ``labels``."""
        return await self.db.read(_page, conds, sort, offset, limit, scope)

    async def summary(
        self,
        group: Sequence[tuple[str | None, str | None]],
        conds: Sequence[Cond],
        scope: Scope = None,
    ) -> list[dict[str, Any]]:
        """Counts by ``group`` (each a column or a label), largest first; keys ``_g<i>``."""
        return await self.db.read(_summary, group, conds, scope)

    async def ids_of(self, seqs: Sequence[int]) -> dict[int, str]:
        """Job ids of those of ``seqs`` that exist."""
        return await self.db.read(_ids_of, seqs)

    async def seqs_of(self, ids: Sequence[str]) -> dict[str, int]:
        return await self.db.read(_seqs_of, ids)
