"""What webhook delivery reads from the store: the callback targets of jobs.

Reads a few JSON paths of the stored spec, not the whole spec (which may hold inline input
content of a megabyte), so routing a batch of events costs one small query. A stored spec
the database cannot parse as JSON is read whole instead, so it never fails the batch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Connection,
    Text,
    case,
    func,
    insert,
    literal,
    or_,
    select,
    type_coerce,
    update,
)

from jobgate.domain.models import now
from jobgate.store.access import Database
from jobgate.store.schema import cursors, job_events, jobs

log = logging.getLogger(__name__)

_CHUNK = 500  # ids per IN (...) list: well below SQLite's bound-parameter limit


@dataclass(frozen=True, slots=True)
class Target:
    """Where a job's events go, and what a receiver is told about the job."""

    url: str
    name: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    hook: dict[str, Any] | None = None
    """The stored spec's ``_hook``: which body format a front end asked for (``format``),
    and what it needs to render it; None: jobgate's own."""
    reschedules: int = 0


def _target(
    name: Any, url: Any, tags: Any, hook: Any = None, reschedules: Any = 0
) -> Target | None:
    if not isinstance(url, str):
        return None
    labels = {str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {}
    return Target(
        url,
        name if isinstance(name, str) else None,
        labels,
        hook if isinstance(hook, dict) else None,
        reschedules if isinstance(reschedules, int) else 0,
    )


def _targets(conn: Connection, job_ids: Sequence[str]) -> dict[str, Target]:
    url: Any = jobs.c.spec["callback"].as_string()
    tags: Any = jobs.c.spec["tags"]
    hook: Any = jobs.c.spec["_hook"]
    ok: Any = literal(True)
    if conn.dialect.name == "sqlite":
        # SQLite's JSON functions fail the whole statement on one spec that is not JSON
        # (Python's json writes NaN/Infinity, which older versions stored): such a row is
        # only flagged here, and read whole below, where Python's parser accepts it.
        ok = func.json_valid(jobs.c.spec) == 1
        url, tags = case((ok, url), else_=None), case((ok, tags), else_=None)
        hook = case((ok, hook), else_=None)
    out: dict[str, Target] = {}
    odd: list[str] = []
    for i in range(0, len(job_ids), _CHUNK):
        rows = conn.execute(
            select(
                jobs.c.id,
                jobs.c.name,
                jobs.c.reschedules,
                url.label("url"),
                tags.label("tags"),
                hook.label("hook"),
                ok.label("ok"),
            )
            .where(jobs.c.id.in_(job_ids[i : i + _CHUNK]))
            .where(or_(url.is_not(None), ~ok))
        ).all()
        for row in rows:
            if not row.ok:
                odd.append(row.id)
            elif (
                target := _target(row.name, row.url, row.tags, row.hook, row.reschedules)
            ) is not None:
                out[row.id] = target
    raw = type_coerce(jobs.c.spec, Text).label("spec")
    for job_id in odd:
        whole = conn.execute(
            select(jobs.c.name, jobs.c.reschedules, raw).where(jobs.c.id == job_id)
        ).first()
        if whole is None:
            continue
        try:
            spec = json.loads(whole.spec)
        except (TypeError, ValueError):
            log.error("job %s: stored spec is not JSON; its events have no callback", job_id)
            continue
        if not isinstance(spec, dict):
            continue
        target = _target(
            whole.name, spec.get("callback"), spec.get("tags"), spec.get("_hook"), whole.reschedules
        )
        if target is not None:
            out[job_id] = target
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


def _load_cursor(conn: Connection, name: str) -> int | None:
    stmt = select(cursors.c.seq).where(cursors.c.name == name)
    value = conn.execute(stmt).scalar()
    return None if value is None else int(value)


def _save_cursor(conn: Connection, name: str, seq: int) -> None:
    at = now()
    stmt = update(cursors).where(cursors.c.name == name).values(seq=seq, updated_at=at)
    if not conn.execute(stmt).rowcount:
        conn.execute(insert(cursors).values(name=name, seq=seq, updated_at=at))


async def load_cursor(db: Database, name: str) -> int | None:
    """The saved sequence number of cursor ``name`` (None: never saved)."""
    return await db.read(_load_cursor, name)


async def save_cursor(db: Database, name: str, seq: int) -> None:
    await db.write(_save_cursor, name, seq)
