"""The job store: create, read, page, and the one place where states change.

Every state change is a compare-and-set on the current state, checked against
:data:`jobgate.domain.states.TRANSITIONS`, and writes an event row in the same transaction.
Each public method is one transaction run by :class:`~jobgate.store.access.Database`.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    Text,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import ClauseElement

from jobgate.domain.lifecycle import Policy
from jobgate.domain.models import JobEvent, JobRecord, now
from jobgate.domain.states import State, check_transition
from jobgate.observability.metrics import SUBMISSIONS
from jobgate.store.access import Database
from jobgate.store.schema import job_credentials, job_events, job_tags, jobs
from jobgate.store.visibility import Scope, scope_condition

log = logging.getLogger(__name__)

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
    jobs.c.group_id,
    jobs.c.reschedules,
    jobs.c.updated_at,
    jobs.c.app_status,
    jobs.c.share_group,
    jobs.c.waiting_since,
    jobs.c.retries,
    jobs.c.state_since,
    jobs.c.stalled,
    jobs.c.heartbeat_at,
    jobs.c.heartbeat,
    jobs.c.dispatcher,
)
_MINIMAL_COLUMNS = (jobs.c.seq, jobs.c.id, jobs.c.state, jobs.c.created_at)


@dataclass(frozen=True, slots=True)
class ListQuery:
    """Filters for :meth:`JobStore.page`. ``tags`` maps key → value; ``""`` matches any value."""

    name_prefix: str | None = None
    state: State | None = None
    tags: dict[str, str] = field(default_factory=dict)
    owner: Scope = None
    """One owner's jobs, or the jobs a :class:`Visibility` allows."""
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
    group_id: str | None = None
    share_group: str | None = None
    """The group whose members also see this job (authorization policy)."""
    credential: str | None = field(default=None, repr=False)
    """The submitter's bearer token, encrypted (auth/secrets.py), for backends needing one."""


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
        group_id=m["group_id"],
        reschedules=m["reschedules"],
        updated_at=_aware(m["updated_at"]),
        app_status=m["app_status"],
        share_group=m["share_group"],
        waiting_since=_aware(m["waiting_since"]) if m["waiting_since"] is not None else None,
        retries=m["retries"],
        state_since=_aware(m["state_since"]) if m["state_since"] is not None else None,
        stalled=bool(m["stalled"]),
        heartbeat_at=_aware(m["heartbeat_at"]) if m["heartbeat_at"] is not None else None,
        heartbeat=m["heartbeat"],
        dispatcher=m["dispatcher"],
    )


def _minimal(row: Row[Any] | Any) -> JobRecord:
    return JobRecord(
        id=row.id, state=State(row.state), spec={}, logs=None, created_at=_aware(row.created_at)
    )


def _owner_of(job_id: str) -> Any:
    return select(jobs.c.owner).where(jobs.c.id == job_id).scalar_subquery()


# -- transactions (synchronous; run by Database) -------------------------------------------


def _create(
    conn: Connection, new_jobs: Sequence[NewJob], source: str, details: Sequence[str] | None
) -> list[JobEvent]:
    job_rows, tag_rows, event_rows = [], [], []
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
                "group_id": j.group_id,
                "share_group": j.share_group,
                "state_since": j.created_at,
                "watched": int(Policy.of_spec(j.spec).watched),
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
                "owner": j.owner,
            }
        )
    if conn.dialect.name == "sqlite":
        seqs: Iterable[int] = _insert_sqlite(conn, job_rows, tag_rows, event_rows)
    elif conn.dialect.driver == "asyncpg":
        seqs = _insert_asyncpg(conn, job_rows, tag_rows, event_rows)
    else:
        job_seqs = conn.execute(
            insert(jobs).returning(jobs.c.seq, sort_by_parameter_order=True), job_rows
        ).scalars()
        seq_of = dict(zip((r["id"] for r in job_rows), job_seqs, strict=True))
        if tag_rows:
            conn.execute(
                insert(job_tags), [{**t, "job_seq": seq_of[t["job_id"]]} for t in tag_rows]
            )
        seqs = conn.execute(
            insert(job_events).returning(job_events.c.seq, sort_by_parameter_order=True),
            event_rows,
        ).scalars()
    secrets = [{"job_id": j.id, "secret": j.credential} for j in new_jobs if j.credential]
    if secrets:
        conn.execute(insert(job_credentials), secrets)
    return [JobEvent(seq=seq, **row) for seq, row in zip(seqs, event_rows, strict=True)]


_JOB_COLUMNS = (
    *("id", "state", "name", "owner", "backend", "priority", "attempt"),
    *("created_at", "updated_at", "spec", "logs", "group_id", "share_group"),
    *("state_since", "watched"),
)
_EVENT_COLUMNS = ("job_id", "at", "from_state", "to_state", "detail", "source", "owner")
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""The engine's JSON serializer (:func:`jobgate.store.database.json_dumps`), built once."""


def _sqlite_time(value: datetime) -> str:
    """A time as SQLAlchemy stores it in SQLite (UTC, no offset)."""
    return (value.astimezone(UTC) if value.tzinfo else value).strftime("%Y-%m-%d %H:%M:%S.%f")


def _insert_sql(table: str, columns: Sequence[str], style: str = "?") -> str:
    """An INSERT of one row, placeholders ``?`` (SQLite) or ``$n`` (asyncpg)."""
    names = ", ".join(f'"{c}"' for c in columns)
    marks = ["?"] * len(columns) if style == "?" else [f"${i + 1}" for i in range(len(columns))]
    return f'INSERT INTO "{table}" ({names}) VALUES ({", ".join(marks)})'


_JOB_INSERT_RETURNING = _insert_sql("jobs", _JOB_COLUMNS) + ' RETURNING "seq"'
_EVENT_INSERT_RETURNING = _insert_sql("job_events", _EVENT_COLUMNS) + ' RETURNING "seq"'


def _insert_sqlite(
    conn: Connection,
    job_rows: list[dict[str, Any]],
    tag_rows: list[dict[str, Any]],
    event_rows: list[dict[str, Any]],
) -> list[int]:
    """The rows of :func:`_create` stored exactly as SQLAlchemy would store them (JSON text,
    UTC times), through the driver's ``executemany`` without SQLAlchemy's per-row parameter
    processing, which was more than half of the cost of a bulk submission."""
    encode = _JSON.encode
    rows, times = [], []
    for r in job_rows:
        at = _sqlite_time(r["created_at"])
        times.append(at)  # each job's creation event has the same time
        values = {**r, "created_at": at, "updated_at": at, "spec": encode(r["spec"])}
        values["state_since"] = at
        values["logs"] = encode(r["logs"])
        rows.append(tuple(values[c] for c in _JOB_COLUMNS))
    events = [
        (e["job_id"], at, e["from_state"], e["to_state"], e["detail"], e["source"], e["owner"])
        for e, at in zip(event_rows, times, strict=True)
    ]
    tags_sql = _insert_sql("job_tags", ("job_id", "key", "value", "job_seq"))
    if len(rows) == 1:
        # One job (a typical POST): RETURNING, three statements instead of seven, straight
        # to the driver (in the same transaction): SQLAlchemy's execution path costs
        # more than SQLite's.
        raw: Any = conn.connection.driver_connection
        driver_error = conn.dialect.loaded_dbapi.Error
        try:
            seq = raw.execute(_JOB_INSERT_RETURNING, rows[0]).fetchone()[0]
            if tag_rows:
                tags = [(t["job_id"], t["key"], t["value"], seq) for t in tag_rows]
                raw.executemany(tags_sql, tags)
            return [raw.execute(_EVENT_INSERT_RETURNING, events[0]).fetchone()[0]]
        except driver_error as exc:  # as SQLAlchemy would raise it (IntegrityError, ...)
            raise DBAPIError.instance(
                _JOB_INSERT_RETURNING, None, exc, driver_error, dialect=conn.dialect
            ) from exc
    # One writer, in one transaction: the new rows are exactly those after the current
    # last sequence number (AUTOINCREMENT gives a new row a larger seq than any before).
    before = conn.exec_driver_sql("SELECT coalesce(max(seq), 0) FROM jobs").scalar_one()
    conn.exec_driver_sql(_insert_sql("jobs", _JOB_COLUMNS), rows)
    new = conn.exec_driver_sql("SELECT id, seq FROM jobs WHERE seq > ?", (before,))
    job_seq: dict[str, int] = {job_id: seq for job_id, seq in new}
    if tag_rows:
        conn.exec_driver_sql(
            tags_sql,
            [(t["job_id"], t["key"], t["value"], job_seq[t["job_id"]]) for t in tag_rows],
        )
    before = conn.exec_driver_sql("SELECT coalesce(max(seq), 0) FROM job_events").scalar_one()
    conn.exec_driver_sql(_insert_sql("job_events", _EVENT_COLUMNS), events)
    new = conn.exec_driver_sql("SELECT job_id, seq FROM job_events WHERE seq > ?", (before,))
    seq_of: dict[str, int] = {job_id: seq for job_id, seq in new}
    return [seq_of[e["job_id"]] for e in event_rows]


def _next_seqs(conn: Connection, table: str, n: int) -> list[int]:
    """``n`` new sequence numbers of ``table``, ascending (drawn as its inserts would)."""
    rows = conn.exec_driver_sql(
        f"SELECT nextval(pg_get_serial_sequence('{table}', 'seq')) FROM generate_series(1, $1)",
        (n,),
    )
    return sorted(int(s) for (s,) in rows)


def _insert_asyncpg(
    conn: Connection,
    job_rows: list[dict[str, Any]],
    tag_rows: list[dict[str, Any]],
    event_rows: list[dict[str, Any]],
) -> list[int]:
    """The rows of :func:`_create` stored as SQLAlchemy would store them on PostgreSQL, through
    asyncpg's ``executemany``: the seqs are drawn from the sequences first (in list order, as
    ``RETURNING ... sort_by_parameter_order`` gave them), which spares RETURNING and
    SQLAlchemy's per-row parameter processing, half the cost of a bulk submission."""
    encode = _JSON.encode
    job_seqs = _next_seqs(conn, "jobs", len(job_rows))
    columns = ("seq", *_JOB_COLUMNS)
    rows = []
    for seq, r in zip(job_seqs, job_rows, strict=True):
        values = {**r, "spec": encode(r["spec"]), "logs": encode(r["logs"])}
        rows.append((seq, *(values[c] for c in _JOB_COLUMNS)))
    conn.exec_driver_sql(_insert_sql("jobs", columns, "$"), rows)
    if tag_rows:
        seq_of = dict(zip((r["id"] for r in job_rows), job_seqs, strict=True))
        conn.exec_driver_sql(
            _insert_sql("job_tags", ("job_id", "key", "value", "job_seq"), "$"),
            [(t["job_id"], t["key"], t["value"], seq_of[t["job_id"]]) for t in tag_rows],
        )
    event_seqs = _next_seqs(conn, "job_events", len(event_rows))
    conn.exec_driver_sql(
        _insert_sql("job_events", ("seq", *_EVENT_COLUMNS), "$"),
        [
            (seq, *(e[c] for c in _EVENT_COLUMNS))
            for seq, e in zip(event_seqs, event_rows, strict=True)
        ],
    )
    return event_seqs


UNREADABLE_KEY = "_unreadable"
"""Set in the spec of a record whose stored spec is not JSON (hidden from clients)."""


def _get(conn: Connection, job_id: str) -> JobRecord | None:
    try:
        row = conn.execute(select(*_FULL_COLUMNS).where(jobs.c.id == job_id)).first()
    except ValueError:  # the JSON of the row does not parse: read it as text instead
        return _get_lenient(conn, job_id)
    return None if row is None else _record(row)


def _get_lenient(conn: Connection, job_id: str) -> JobRecord | None:
    """The record with JSON columns that do not parse replaced: the spec by
    ``{UNREADABLE_KEY: reason}``, the logs by none. So the job can still be shown,
    failed, canceled or deleted."""
    raw = {c.name: type_coerce(c, Text).label(c.name) for c in (jobs.c.spec, jobs.c.logs)}
    cols = [raw.get(c.name, c) for c in _FULL_COLUMNS]
    row = conn.execute(select(*cols).where(jobs.c.id == job_id)).first()
    if row is None:
        return None
    values = dict(row._mapping)
    try:
        values["spec"] = json.loads(values["spec"])
    except (TypeError, ValueError) as exc:
        values["spec"] = {UNREADABLE_KEY: f"the stored spec is not JSON ({exc})"}
    try:
        values["logs"] = None if values["logs"] is None else json.loads(values["logs"])
    except (TypeError, ValueError):
        values["logs"] = None
    return _record(SimpleNamespace(_mapping=values))


TAG_PROBE = 10_000
"""Of several tag filters, the page is driven by one matching at most this many jobs when
there is one (the rarest so counted), else by the first."""


def _driving_tag(conn: Connection, tags: list[tuple[str, str]]) -> tuple[str, str]:
    if len(tags) == 1:
        return tags[0]
    counts = []
    for key, value in tags:
        probe = (
            select(literal(1))
            .select_from(job_tags)
            .where(job_tags.c.key == key, job_tags.c.value == value)
            .limit(TAG_PROBE + 1)
        )
        counts.append(conn.execute(select(func.count()).select_from(probe.subquery())).scalar_one())
    return tags[min(range(len(tags)), key=lambda i: (counts[i], i))]


def _page(conn: Connection, query: ListQuery, minimal: bool) -> tuple[list[JobRecord], int | None]:
    source: Any = jobs
    seq = jobs.c.seq
    conds = []
    tags = dict(query.tags)
    valued = [(k, v) for k, v in tags.items() if v != ""]
    if valued:
        # Walk one tag's (key, value, job_seq) index newest first and stop after the page,
        # rather than testing job after job for the tag (a rare one meant every job).
        key, value = _driving_tag(conn, valued)
        del tags[key]
        by_tag = job_tags.alias("by_tag")
        source = by_tag.join(jobs, jobs.c.seq == by_tag.c.job_seq)
        conds += [by_tag.c.key == key, by_tag.c.value == value]
        seq = by_tag.c.job_seq
    stmt = select(*(_MINIMAL_COLUMNS if minimal else _FULL_COLUMNS)).select_from(source)
    if query.before_seq is not None:
        conds.append(seq < query.before_seq)
    if query.state is not None:
        conds.append(jobs.c.state == query.state.value)
    visible = scope_condition(query.owner)
    if visible is not None:
        conds.append(visible)
    narrow = False
    if query.name_prefix:
        # A range, not LIKE: no wildcard escaping, and the (name, seq) index applies.
        conds.append(jobs.c.name >= query.name_prefix)
        conds.append(jobs.c.name < query.name_prefix + "\U0010ffff")
        narrow = not valued and conn.dialect.name == "sqlite"
    for i, (key, value) in enumerate(tags.items()):
        other = job_tags.alias(f"tag_{i}")
        if value != "" and valued:
            # Probed in the (key, value, job_seq) index by the driving tag's seq: no job row
            # is read for a candidate that lacks this tag.
            tag = and_(other.c.key == key, other.c.value == value, other.c.job_seq == seq)
        else:
            tag = and_(other.c.job_id == jobs.c.id, other.c.key == key)
            if value != "":
                tag = and_(tag, other.c.value == value)
        conds.append(exists().where(tag))
    if narrow:
        # SQLite reads the range of the (name, seq) index (a walk of every job when the
        # prefix is rare); the page's seqs from it alone, then only those jobs (not every
        # match's row, into the sort).
        page = select(jobs.c.seq).where(*conds).order_by(jobs.c.seq.desc()).limit(query.limit + 1)
        conds = [jobs.c.seq.in_(page.scalar_subquery())]
    if conds:
        stmt = stmt.where(and_(*conds))
    rows = conn.execute(stmt.order_by(seq.desc()).limit(query.limit + 1)).all()
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    records = [_minimal(r) if minimal else _record(r) for r in rows]
    return records, (rows[-1].seq if more and rows else None)


def _access_of(conn: Connection, ids: Sequence[str]) -> dict[str, tuple[str | None, str | None]]:
    out: dict[str, tuple[str | None, str | None]] = {}
    for i in range(0, len(ids), 500):
        stmt = select(jobs.c.id, jobs.c.owner, jobs.c.share_group).where(
            jobs.c.id.in_(ids[i : i + 500])
        )
        out.update((r.id, (r.owner, r.share_group)) for r in conn.execute(stmt).all())
    return out


def _credential(conn: Connection, job_id: str) -> str | None:
    stmt = select(job_credentials.c.secret).where(job_credentials.c.job_id == job_id)
    value = conn.execute(stmt).scalar()
    return None if value is None else str(value)


def _select_all(conn: Connection, stmt: Any) -> list[JobRecord]:
    return [_record(r) for r in conn.execute(stmt).all()]


def _rows(conn: Connection, stmt: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(stmt).all()]


def _scalars(conn: Connection, stmt: Any) -> list[Any]:
    return list(conn.execute(stmt).scalars())


def _event(r: Row[Any] | Any) -> JobEvent:
    return JobEvent(
        seq=r.seq,
        job_id=r.job_id,
        at=_aware(r.at),
        from_state=r.from_state,
        to_state=r.to_state,
        detail=r.detail,
        source=r.source,
        owner=r.owner,
        app_status=r.app_status,
    )


def _events(conn: Connection, job_id: str) -> list[JobEvent]:
    stmt = select(job_events).where(job_events.c.job_id == job_id).order_by(job_events.c.seq)
    return [_event(r) for r in conn.execute(stmt).all()]


def _events_after(
    conn: Connection, after_seq: int, job_id: str | None, owner: str | None, limit: int
) -> list[JobEvent]:
    stmt = select(job_events).where(job_events.c.seq > after_seq)
    if job_id is not None:
        stmt = stmt.where(job_events.c.job_id == job_id)
    if owner is not None:
        stmt = stmt.where(job_events.c.owner == owner)
    return [_event(r) for r in conn.execute(stmt.order_by(job_events.c.seq).limit(limit)).all()]


def _transition(
    conn: Connection,
    job_id: str,
    sources: list[State],
    to: State,
    detail: str | None,
    source: str,
    values: dict[str, Any],
    unplaced: bool = False,
    via: tuple[frozenset[State], State, str] | None = None,
) -> tuple[State, list[JobEvent]] | None:
    at = now()
    merged = {**_entered(at), **values}
    if any(isinstance(v, ClauseElement) for v in merged.values()):
        cas: Any = _cas_statement_with(merged, unplaced)
        params: dict[str, Any] = {}
    else:
        # Built once per set of columns: building it each time cost 4/5 of the transition.
        cas = _cas_statement(tuple(sorted(merged)), unplaced)
        params = {f"v_{k}": v for k, v in merged.items()}
    params.update(k_id=job_id, k_to=to.value, k_at=at, k_detail=detail)
    # A compare-and-set per expected state, no SELECT first: one statement in the
    # common single-source case.
    for current in sources:
        if conn.execute(cas, {**params, "k_from": current.value}).rowcount == 1:
            break
    else:
        return None
    steps = [(current, to, detail)]
    if via is not None and current in via[0]:
        steps = [(current, via[1], via[2]), (via[1], to, detail)]
    events = []
    for frm, dst, why in steps:
        row = conn.execute(
            _EVENT_INSERT,
            {
                "k_id": job_id,
                "k_at": at,
                "k_from": frm.value,
                "k_to": dst.value,
                "k_detail": why,
                "k_source": source,
                "k_app": values.get("app_status"),
            },
        ).one()
        events.append(_event(row))
    return current, events


def _cas_where(unplaced: bool) -> tuple[Any, ...]:
    extra = (jobs.c.native_id.is_(None),) if unplaced else ()
    return (jobs.c.id == bindparam("k_id"), jobs.c.state == bindparam("k_from"), *extra)


_CAS_COMMON: dict[str, Any] = {
    "state": bindparam("k_to"),
    "updated_at": bindparam("k_at"),
    "detail": bindparam("k_detail"),
}


@functools.lru_cache(maxsize=256)
def _cas_statement(columns: tuple[str, ...], unplaced: bool) -> Any:
    """The compare-and-set of :func:`_transition` setting ``columns`` (``v_<column>``)."""
    values = {**_CAS_COMMON, **{c: bindparam(f"v_{c}") for c in columns}}
    return update(jobs).where(*_cas_where(unplaced)).values(**values)


def _cas_statement_with(values: dict[str, Any], unplaced: bool) -> Any:
    """The compare-and-set for values holding SQL expressions (built each time)."""
    return update(jobs).where(*_cas_where(unplaced)).values(**{**_CAS_COMMON, **values})


_EVENT_INSERT = (
    insert(job_events)
    .values(
        job_id=bindparam("k_id"),
        at=bindparam("k_at"),
        from_state=bindparam("k_from"),
        to_state=bindparam("k_to"),
        detail=bindparam("k_detail"),
        source=bindparam("k_source"),
        owner=select(jobs.c.owner).where(jobs.c.id == bindparam("k_id")).scalar_subquery(),
        app_status=bindparam("k_app"),
    )
    .returning(*job_events.c)
)
"""A state change's event row (the owner copied from the job)."""


def _entered(at: datetime) -> dict[str, Any]:
    """Columns every state change resets: since when the job is in its state, not stalled."""
    return {"state_since": at, "stalled": 0}


def _mark(
    conn: Connection, job_id: str, state: str, detail: str, source: str, values: dict[str, Any]
) -> JobEvent | None:
    """An event without a state change (``state`` → ``state``): stalled, alive again."""
    at = now()
    stmt = update(jobs).where(jobs.c.id == job_id, jobs.c.state == state)
    if not conn.execute(stmt.values(updated_at=at, detail=detail, **values)).rowcount:
        return None
    row = conn.execute(
        insert(job_events)
        .values(
            job_id=job_id,
            at=at,
            from_state=state,
            to_state=state,
            detail=detail,
            source=source,
            owner=_owner_of(job_id),
        )
        .returning(*job_events.c)
    ).one()
    return _event(row)


_BEATING = (State.QUEUED.value, State.INITIALIZING.value, State.RUNNING.value)
"""States in which a job's heartbeats are recorded."""


def _heartbeats(
    conn: Connection, beats: Sequence[tuple[str, datetime, dict[str, Any]]]
) -> dict[str, tuple[str, bool]]:
    """Record the last heartbeat of each job still active; (state, stalled) of each job."""
    for i in range(0, len(beats), 500):
        chunk = beats[i : i + 500]
        by_app: list[dict[str, Any]] = []
        plain: list[dict[str, Any]] = []
        for job_id, at, fields in chunk:
            row = {"k": job_id, "at": at, "hb": fields}
            if fields.get("app_status") is not None:
                by_app.append({**row, "app": str(fields["app_status"])})
            else:
                plain.append(row)
        # OR of equalities, not IN: an expanding IN cannot be run as executemany.
        active = or_(*(jobs.c.state == s for s in _BEATING))
        base = update(jobs).where(jobs.c.id == bindparam("k"), active)
        if plain:
            conn.execute(
                base.values(
                    heartbeat_at=bindparam("at"),
                    heartbeat=bindparam("hb", type_=jobs.c.heartbeat.type),
                ),
                plain,
            )
        if by_app:
            conn.execute(
                base.values(
                    heartbeat_at=bindparam("at"),
                    heartbeat=bindparam("hb", type_=jobs.c.heartbeat.type),
                    app_status=bindparam("app"),
                ),
                by_app,
            )
    ids = list(dict.fromkeys(b[0] for b in beats))
    out: dict[str, tuple[str, bool]] = {}
    for i in range(0, len(ids), 500):
        stmt = select(jobs.c.id, jobs.c.state, jobs.c.stalled).where(
            jobs.c.id.in_(ids[i : i + 500])
        )
        out.update((r.id, (r.state, bool(r.stalled))) for r in conn.execute(stmt).all())
    return out


def _claim(
    conn: Connection, ids: Sequence[str], detail: str, dispatcher: str | None
) -> tuple[list[str], list[JobEvent]]:
    """QUEUED → INITIALIZING for those of ``ids`` still queued; attempt += 1."""
    at = now()
    params = {"k_ids": list(ids), "k_at": at, "k_detail": detail, "k_dispatcher": dispatcher}
    claimed = list(conn.execute(_claim_statements()[0], params).scalars())
    if not claimed:
        return [], []
    rows = conn.execute(_claim_statements()[1], {"k_ids": claimed, "k_at": at}).all()
    return claimed, [_event(r) for r in rows]


@functools.cache
def _claim_statements() -> tuple[Any, Any, Any, Any]:
    """The claim's statements, built once (building them cost more than running them):
    the compare-and-set, its events, and the queue's head (plain; locked, skipping rows
    locked by others)."""
    ids: Any = bindparam("k_ids", expanding=True)
    at = bindparam("k_at", type_=jobs.c.created_at.type)
    claimable = (
        jobs.c.state == State.QUEUED.value,
        jobs.c.native_id.is_(None),
        or_(jobs.c.not_before.is_(None), jobs.c.not_before <= at),
    )
    cas = (
        update(jobs)
        .where(jobs.c.id.in_(ids), *claimable)
        .values(
            state=State.INITIALIZING.value,
            attempt=jobs.c.attempt + 1,
            updated_at=at,
            detail=bindparam("k_detail"),
            dispatcher=bindparam("k_dispatcher"),
            state_since=at,
            stalled=0,
        )
        .returning(jobs.c.id)
    )
    events = (
        insert(job_events)
        .from_select(
            ["job_id", "at", "from_state", "to_state", "detail", "source", "owner"],
            select(
                jobs.c.id,
                at,  # the same instant for the batch
                literal(State.QUEUED.value, jobs.c.state.type),
                jobs.c.state,
                jobs.c.detail,
                literal("dispatcher", job_events.c.source.type),
                jobs.c.owner,
            ).where(jobs.c.id.in_(ids)),
        )
        .returning(*job_events.c)
    )
    head = (
        select(*_FULL_COLUMNS)
        .where(jobs.c.backend == bindparam("k_backend"), *claimable)
        .order_by(jobs.c.priority.desc(), jobs.c.seq)
        .limit(bindparam("k_limit"))
    )
    return cas, events, head, head.with_for_update(skip_locked=True)


Pick = Callable[
    [list[JobRecord]], tuple[list[tuple[JobRecord, Any]], list[tuple[JobRecord, Exception]]]
]
"""Chooses which queued records to claim: (record, anything) pairs to claim, and
(record, why) pairs that cannot run as stored."""


def _claim_next(
    conn: Connection, backend: str, limit: int, pick: Pick, detail: str, dispatcher: str | None
) -> tuple[list[tuple[JobRecord, Any]], list[tuple[JobRecord, Exception]], list[JobEvent]]:
    """Read the head of ``backend``'s queue, let ``pick`` choose, claim the chosen. On
    PostgreSQL the head is locked, skipping rows another dispatcher has locked, so
    dispatchers claiming at once take different jobs instead of racing for the same."""
    _, _, head, locked = _claim_statements()
    stmt = locked if conn.dialect.name == "postgresql" else head
    params = {"k_backend": backend, "k_limit": limit, "k_at": now()}
    records = [_record(r) for r in conn.execute(stmt, params).all()]
    picked, refused = pick(records)
    if not picked:
        return [], refused, []
    claimed, events = _claim(conn, [rec.id for rec, _ in picked], detail, dispatcher)
    won = set(claimed)
    return [(rec, extra) for rec, extra in picked if rec.id in won], refused, events


def _claimable(at: datetime | None = None) -> tuple[Any, ...]:
    """Conditions of a job the dispatcher may claim: QUEUED in the gateway (no backend
    holds it) and not waiting out a retry delay."""
    at = at or now()
    return (
        jobs.c.state == State.QUEUED.value,
        jobs.c.native_id.is_(None),
        or_(jobs.c.not_before.is_(None), jobs.c.not_before <= at),
    )


def _update(conn: Connection, job_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(updated_at=now(), **values))


def _update_in(conn: Connection, job_id: str, state: str, values: dict[str, Any]) -> bool:
    stmt = update(jobs).where(jobs.c.id == job_id, jobs.c.state == state)
    return bool(conn.execute(stmt.values(updated_at=now(), **values)).rowcount)


def _set_tags(conn: Connection, job_id: str, tags: dict[str, str], spec: dict[str, Any]) -> None:
    conn.execute(delete(job_tags).where(job_tags.c.job_id == job_id))
    if tags:
        seq = conn.execute(select(jobs.c.seq).where(jobs.c.id == job_id)).scalar_one()
        conn.execute(
            insert(job_tags),
            [{"job_id": job_id, "key": k, "value": v, "job_seq": seq} for k, v in tags.items()],
        )
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(spec=spec, updated_at=now()))


def _delete(conn: Connection, job_id: str) -> bool:
    return bool(conn.execute(delete(jobs).where(jobs.c.id == job_id)).rowcount)


def _delete_in_states(conn: Connection, job_ids: Sequence[str], states: list[str]) -> set[str]:
    deleted: set[str] = set()
    for i in range(0, len(job_ids), 500):  # bound the number of SQL parameters
        stmt = (
            delete(jobs)
            .where(jobs.c.id.in_(job_ids[i : i + 500]), jobs.c.state.in_(states))
            .returning(jobs.c.id)
        )
        deleted.update(conn.execute(stmt).scalars())
    return deleted


def _count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(jobs)).scalar_one())


def _counts_by_backend_state(conn: Connection) -> dict[tuple[str, str], int]:
    # Served by the (backend, state) index alone: no row is read.
    stmt = select(jobs.c.backend, jobs.c.state, func.count()).group_by(jobs.c.backend, jobs.c.state)
    return {(b, s): int(n) for b, s, n in conn.execute(stmt)}


class JobStore:
    """Async access to jobs. Safe to share across tasks of one event loop."""

    def __init__(self, engine: AsyncEngine | Database) -> None:
        self.db = engine if isinstance(engine, Database) else Database(engine)
        self.engine = self.db.engine
        self.listeners: list[Callable[[list[JobEvent]], None]] = []
        """Called on the event loop with the events of each committed write."""
        self.creating: list[Callable[[Sequence[NewJob]], None]] = []
        """Called on the event loop with the jobs of each committed create, before the
        listeners get their creation events (what the events do not say: the spec)."""

    def _emit(self, events: list[JobEvent]) -> None:
        for listener in self.listeners:
            try:
                listener(events)
            except Exception:
                log.exception("event listener failed")

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
        if new_jobs:
            events = await self.db.write(_create, new_jobs, source, details)
            for hook in self.creating:
                try:
                    hook(new_jobs)
                except Exception:
                    log.exception("creation hook failed")
            self._emit(events)
            for job in new_jobs:
                SUBMISSIONS.labels(job.backend).inc()

    async def get(self, job_id: str) -> JobRecord | None:
        return await self.db.read(_get, job_id)

    async def credential(self, job_id: str) -> str | None:
        """The encrypted credential the job carries (decrypt with auth.secrets.SecretBox)."""
        return await self.db.read(_credential, job_id)

    async def access_of(self, ids: Sequence[str]) -> dict[str, tuple[str | None, str | None]]:
        """(owner, share group) of each of ``ids`` that exists."""
        return await self.db.read(_access_of, list(ids))

    async def page(
        self, query: ListQuery, *, minimal: bool = False
    ) -> tuple[list[JobRecord], int | None]:
        """One page, newest first. Returns the page and the cursor for the next one (or None).

        Keyset paging on ``seq``: the cost of a page does not grow with how deep it is.
        """
        return await self.db.read(_page, query, minimal)

    async def in_states(
        self,
        states: Iterable[State],
        backend: str | None = None,
        *,
        placed: bool = False,
        ids: Sequence[str] | None = None,
    ) -> list[JobRecord]:
        """All jobs in the given states (for recovery and reconciliation), oldest first;
        with ``placed``, only those a backend holds (a native id is recorded); with
        ``ids``, only those of them."""
        stmt = select(*_FULL_COLUMNS).where(jobs.c.state.in_([s.value for s in states]))
        if backend is not None:
            stmt = stmt.where(jobs.c.backend == backend)
        if placed:
            stmt = stmt.where(jobs.c.native_id.is_not(None))
        if ids is None:
            return await self.db.read(_select_all, stmt.order_by(jobs.c.seq))
        out: list[JobRecord] = []
        for i in range(0, len(ids), 500):  # bound the number of SQL parameters
            chunk = stmt.where(jobs.c.id.in_(ids[i : i + 500])).order_by(jobs.c.seq)
            out.extend(await self.db.read(_select_all, chunk))
        return sorted(out, key=lambda r: r.created_at) if len(ids) > 500 else out

    async def queued(self, backend: str, limit: int) -> list[JobRecord]:
        """Jobs in the gateway's queue for a backend, in dispatch order: priority, then
        age. Not those already in the backend's own queue (QUEUED with a native id), nor
        those waiting out a retry delay."""
        stmt = (
            select(*_FULL_COLUMNS)
            .where(jobs.c.backend == backend, *_claimable())
            .order_by(jobs.c.priority.desc(), jobs.c.seq)
            .limit(limit)
        )
        return await self.db.read(_select_all, stmt)

    async def ids_in_states(self, states: Iterable[State]) -> list[tuple[str, State]]:
        """(id, state) of the jobs :meth:`in_states` returns, without reading their JSON."""
        stmt = (
            select(jobs.c.id, jobs.c.state)
            .where(jobs.c.state.in_([s.value for s in states]))
            .order_by(jobs.c.seq)
        )
        return [(i, State(s)) for i, s in await self.db.read(_rows, stmt)]

    async def queued_ids(self, backend: str, limit: int) -> list[str]:
        """The ids of :meth:`queued`, without reading the rows' JSON."""
        stmt = (
            select(jobs.c.id)
            .where(jobs.c.backend == backend, *_claimable())
            .order_by(jobs.c.priority.desc(), jobs.c.seq)
            .limit(limit)
        )
        return await self.db.read(_scalars, stmt)

    async def events(self, job_id: str) -> list[JobEvent]:
        """A job's state changes, oldest first (the first one is its creation)."""
        return await self.db.read(_events, job_id)

    async def events_after(
        self,
        after_seq: int,
        *,
        job_id: str | None = None,
        owner: str | None = None,
        limit: int = 1000,
    ) -> list[JobEvent]:
        """Events after a sequence number, oldest first (to resume an event stream)."""
        return await self.db.read(_events_after, after_seq, job_id, owner, limit)

    async def count(self) -> int:
        return await self.db.read(_count)

    async def counts_by_backend_state(self) -> dict[tuple[str, str], int]:
        """How many jobs each (backend, state) pair holds (pairs without jobs are absent)."""
        return await self.db.read(_counts_by_backend_state)

    async def transition(
        self,
        job_id: str,
        expected: State | Iterable[State],
        to: State,
        *,
        detail: str | None = None,
        source: str = "dispatcher",
        unplaced: bool = False,
        via: tuple[frozenset[State], State, str] | None = None,
        **values: Any,
    ) -> State | None:
        """Move ``job_id`` to ``to`` if it is currently in ``expected``; record an event.

        ``values`` sets other columns in the same write (``logs``, ``native_id``, …).
        ``unplaced`` also requires that no backend holds the job (no native id): a QUEUED
        job in a backend's queue is not one the gateway may drop.
        ``via`` = (sources, step, detail): a job found in one of those states is recorded
        passing through ``step`` on its way (two events, one write), e.g. a job last seen
        QUEUED that ended: QUEUED → RUNNING ("ran") → COMPLETE.
        Returns the state the job was in, or ``None`` when it was not in ``expected``
        (someone else moved it first) or does not exist. Raises ``IllegalTransition`` if
        the table forbids ``expected → to`` (or a step of ``via``).
        """
        sources = [expected] if isinstance(expected, State) else list(expected)
        for s in sources:
            if via is not None and s in via[0]:
                check_transition(s, via[1])
                check_transition(via[1], to)
            else:
                check_transition(s, to)
        done = await self.db.write(
            _transition, job_id, sources, to, detail, source, values, unplaced, via
        )
        if done is None:
            return None
        self._emit(done[1])
        return done[0]

    async def mark(
        self, job_id: str, state: State, *, detail: str, source: str = "dispatcher", **values: Any
    ) -> bool:
        """Record an event for a job staying in ``state`` (stalled, alive again), setting
        ``values`` with it; False when the job is no longer in ``state``."""
        event = await self.db.write(_mark, job_id, state.value, detail, source, values)
        if event is None:
            return False
        self._emit([event])
        return True

    async def record_heartbeats(
        self, beats: Sequence[tuple[str, datetime, dict[str, Any]]]
    ) -> dict[str, tuple[State, bool]]:
        """Store the last heartbeat (job id, time, fields) of each job still QUEUED,
        INITIALIZING or RUNNING, in one transaction; returns (state, stalled) of each
        job that exists."""
        if not beats:
            return {}
        got = await self.db.write(_heartbeats, beats)
        return {k: (State(v[0]), v[1]) for k, v in got.items()}

    async def watched(
        self, states: Iterable[State], *, dispatcher: str | None = None
    ) -> list[JobRecord]:
        """The jobs in ``states`` whose clock the dispatcher watches (timeouts, heartbeats);
        with ``dispatcher``, only those it drives and those in the gateway's queue."""
        stmt = select(*_FULL_COLUMNS).where(
            jobs.c.watched == 1, jobs.c.state.in_([s.value for s in states])
        )
        if dispatcher is not None:
            stmt = stmt.where(
                or_(
                    jobs.c.dispatcher == dispatcher,
                    and_(jobs.c.state == State.QUEUED.value, jobs.c.native_id.is_(None)),
                )
            )
        return await self.db.read(_select_all, stmt.order_by(jobs.c.seq))

    async def claim(
        self, job_ids: Sequence[str], *, detail: str = "claimed", dispatcher: str | None = None
    ) -> list[str]:
        """Claim queued jobs for dispatch in one transaction, for ``dispatcher``; returns
        those claimed."""
        check_transition(State.QUEUED, State.INITIALIZING)
        if not job_ids:
            return []
        claimed, events = await self.db.write(_claim, job_ids, detail, dispatcher)
        self._emit(events)
        return claimed

    async def claim_next(
        self,
        backend: str,
        limit: int,
        pick: Pick,
        *,
        detail: str = "claimed",
        dispatcher: str | None = None,
    ) -> tuple[list[tuple[JobRecord, Any]], list[tuple[JobRecord, Exception]]]:
        """Claim from the head of ``backend``'s queue (dispatch order, at most ``limit``
        read) what ``pick`` chooses, in one transaction: the claimed (record, what pick
        gave), each now INITIALIZING, and what pick refused. ``pick`` runs on the
        database's thread: it must not block."""
        check_transition(State.QUEUED, State.INITIALIZING)
        claimed, refused, events = await self.db.write(
            _claim_next, backend, limit, pick, detail, dispatcher
        )
        self._emit(events)
        return claimed, refused

    async def update(self, job_id: str, **values: Any) -> None:
        """Set columns without a state change (e.g. logs while a job runs)."""
        await self.db.write(_update, job_id, values)

    async def update_in(self, job_id: str, state: State, **values: Any) -> bool:
        """Set columns only while the job is in ``state`` (no event); whether it was."""
        return await self.db.write(_update_in, job_id, state.value, values)

    async def set_tags(self, job_id: str, tags: dict[str, str], spec: dict[str, Any]) -> None:
        """Replace a job's tags (labels); ``spec`` is the stored spec with the new tags."""
        await self.db.write(_set_tags, job_id, tags, spec)

    async def delete(self, job_id: str) -> bool:
        return await self.db.write(_delete, job_id)

    async def delete_in_states(self, job_ids: Sequence[str], states: Iterable[State]) -> set[str]:
        """Delete those of ``job_ids`` that are in one of ``states`` (compare-and-delete, one
        transaction; tags and events go with them). Returns the ids deleted."""
        if not job_ids:
            return set()
        return await self.db.write(_delete_in_states, job_ids, [s.value for s in states])

    def close(self) -> None:
        self.db.close()
