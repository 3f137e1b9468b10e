"""Search (filters, sort, keyset paging, field choice) and summaries over the jobs table."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    and_,
    exists,
    func,
    literal,
    not_,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from jobgate.domain.models import rfc3339
from jobgate.domain.query import LABEL, Filter, SearchRequest, Sort, SummaryRequest
from jobgate.store.access import Database
from jobgate.store.schema import job_tags, jobs
from jobgate.store.visibility import Scope, scope_condition

COLUMNS: dict[str, Any] = {
    "id": jobs.c.id,
    "state": jobs.c.state,
    "owner": jobs.c.owner,
    "name": jobs.c.name,
    "backend": jobs.c.backend,
    "group": jobs.c.group_id,
    "priority": jobs.c.priority,
    "created_at": jobs.c.created_at,
    "updated_at": jobs.c.updated_at,
    "reschedules": jobs.c.reschedules,
    "attempt": jobs.c.attempt,
    "retries": jobs.c.retries,
    "stalled": jobs.c.stalled,
    "detail": jobs.c.detail,
    "app_status": jobs.c.app_status,
    "spec": jobs.c.spec,
    "logs": jobs.c.logs,
}
TIME_FIELDS = ("created_at", "updated_at")
INT_FIELDS = ("priority", "reschedules", "attempt", "retries", "stalled")
"""``stalled`` is 1 or 0."""


class BadQuery(ValueError):
    """A filter value or cursor that does not fit its field (a 400 for the caller)."""


INT_RANGE = (-(2**63), 2**63 - 1)


class _CaseFreeLike(FunctionElement[bool]):
    """``col LIKE pattern`` (escape ``\\``), case-insensitive as ILIKE is on each database."""

    type = Boolean()
    name = "case_free_like"
    inherit_cache = True


@compiles(_CaseFreeLike)
def _like_lower(element: _CaseFreeLike, compiler: SQLCompiler, **kw: Any) -> str:
    # What ILIKE does on PostgreSQL, spelt so that the lower(name) indexes serve it.
    col, pattern = (compiler.process(c, **kw) for c in element.clauses)
    return f"(lower({col}) LIKE lower({pattern}) ESCAPE '\\')"


@compiles(_CaseFreeLike, "sqlite")
def _like_sqlite(element: _CaseFreeLike, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite's LIKE folds A-Z, as its lower() does: lower(col) LIKE lower(pattern) matches
    # the same rows at a quarter of the cost of a scan.
    col, pattern = (compiler.process(c, **kw) for c in element.clauses)
    return f"({col} LIKE {pattern} ESCAPE '\\')"


def _coerce(field: str, value: Any) -> Any:
    if value is None:
        return None
    if field in TIME_FIELDS:
        try:
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError as exc:
            raise BadQuery(f"{field}: {value!r} is not an RFC 3339 time") from exc
        # Stored times are UTC (SQLite keeps them without an offset): compare in UTC.
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if field in INT_FIELDS:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                number = int(value)
        if number is None or not INT_RANGE[0] <= number <= INT_RANGE[1]:
            raise BadQuery(f"{field}: {value!r} is not a 64-bit integer")
        return number
    return str(value)


def _in(col: ColumnElement[Any], values: list[Any], negate: bool) -> ColumnElement[bool]:
    """``col IN values`` where a ``None`` among the values matches NULL (SQL's never does).

    Negated, NULL counts as "not in" a list without ``None``, as it is "neq" any value.
    """
    cond: ColumnElement[bool] = col.in_([v for v in values if v is not None])
    if None in values:
        cond = or_(cond, col.is_(None))
        return and_(not_(cond), col.is_not(None)) if negate else cond
    return or_(not_(cond), col.is_(None)) if negate else cond


def _compare(col: ColumnElement[Any], op: str, field: str, value: Any) -> ColumnElement[bool]:
    if op in ("in", "not_in"):
        return _in(col, [_coerce(field, v) for v in value], op == "not_in")
    v = _coerce(field, value)
    if op == "eq":
        return col.is_(None) if v is None else col == v
    if op == "neq":
        return col.is_not(None) if v is None else or_(col != v, col.is_(None))
    if v is None:
        raise BadQuery(f"{field}: '{op}' needs a value, not null")
    if op == "gt":
        return col.__gt__(v)
    if op == "lt":
        return col.__lt__(v)
    if field in TIME_FIELDS or field in INT_FIELDS:
        raise BadQuery(f"{field}: 'like' applies to text fields and labels")
    return _CaseFreeLike(col, literal(_pattern(v)))


def _pattern(value: Any) -> str:
    """A ``like`` value as a LIKE pattern (escape ``\\``): '*' and '?' are its wildcards
    (shell style), everything else literal; matched case-insensitively on both databases."""
    pattern = str(value).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return pattern.replace("*", "%").replace("?", "_")


def condition(f: Filter) -> ColumnElement[bool]:
    m = LABEL.match(f.field)
    if m is None:
        return _compare(COLUMNS[f.field], f.op, f.field, f.value)
    key = m.group(1)
    tag = and_(job_tags.c.job_id == jobs.c.id, job_tags.c.key == key)
    # A job without the label has it as null (summaries show it so): ``eq null`` finds it.
    if f.op in ("eq", "neq") and f.value is None:
        return not_(exists().where(tag)) if f.op == "eq" else exists().where(tag)
    if f.op in ("in", "not_in") and None in f.value:
        present = [v for v in f.value if v is not None]
        lacks: ColumnElement[bool] = not_(exists().where(tag))
        if present:
            lacks = or_(
                lacks, exists().where(tag, _compare(job_tags.c.value, "in", "label", present))
            )
        return not_(lacks) if f.op == "not_in" else lacks
    if f.op in ("neq", "not_in"):
        positive = "eq" if f.op == "neq" else "in"
        return not_(exists().where(tag, _compare(job_tags.c.value, positive, "label", f.value)))
    return exists().where(tag, _compare(job_tags.c.value, f.op, "label", f.value))


def _conditions(filters: list[Filter], owner: Scope) -> list[ColumnElement[bool]]:
    conds = [condition(f) for f in filters]
    visible = scope_condition(owner)
    if visible is not None:
        conds.append(visible)
    return conds


def where(filters: list[Filter], owner: Scope = None) -> ColumnElement[bool]:
    return and_(literal(True), *_conditions(filters, owner))


# Sort keys: (column, direction, field). Nullable text sorts with NULL as the smallest value
# (NULLS FIRST ascending, NULLS LAST descending: SQLite's own order, so its indexes serve it,
# and PostgreSQL is told the same explicitly).
Key = tuple[Any, str, str]
NULLABLE = ("name", "owner", "group")


def _sort_columns(sort: list[Sort]) -> list[Key]:
    """(column, direction, field) with ``seq`` last as the tie-breaker.

    ``created_at`` sorts as ``seq``: both grow together, and ``seq`` is indexed with every
    filter column.
    """
    out: list[Key] = []
    for s in sort:
        if s.field in ("created_at",):
            out.append((jobs.c.seq, s.direction, "seq"))
            break  # seq is unique: nothing after it can matter
        out.append((COLUMNS[s.field], s.direction, s.field))
    if not out or out[-1][2] != "seq":
        out.append((jobs.c.seq, out[-1][1] if out else "desc", "seq"))
    return out


def _order(key: Key) -> Any:
    col, direction, field = key
    if direction == "asc":
        return col.asc().nulls_first() if field in NULLABLE else col.asc()
    return col.desc().nulls_last() if field in NULLABLE else col.desc()


def _encode(keys: list[Key], values: list[Any]) -> str:
    raw = json.dumps(
        {
            "k": [f"{f}:{d}" for _c, d, f in keys],
            "v": [v.isoformat() if isinstance(v, datetime) else v for v in values],
        }
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str, keys: list[Key]) -> list[Any]:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise BadQuery("cursor: not a cursor returned by this server") from exc
    if not isinstance(data, dict) or not isinstance(data.get("v"), list):
        raise BadQuery("cursor: not a cursor returned by this server")
    if data.get("k") != [f"{f}:{d}" for _c, d, f in keys] or len(data["v"]) != len(keys):
        raise BadQuery("cursor: it belongs to a search with another sort order")
    out = []
    for (_c, _d, f), v in zip(keys, data["v"], strict=True):
        # Check types, not just shapes: the values are bound into SQL.
        if f in ("seq", *INT_FIELDS):
            ok = (
                isinstance(v, int) and not isinstance(v, bool) and INT_RANGE[0] <= v <= INT_RANGE[1]
            )
        else:
            ok = isinstance(v, str) or (v is None and f in NULLABLE)
        if not ok:
            raise BadQuery("cursor: not a cursor returned by this server")
        out.append(_coerce(f, v) if f in TIME_FIELDS or f in INT_FIELDS else v)
    return out


def _after(keys: list[Key], values: list[Any]) -> list[ColumnElement[bool]]:
    """Rows strictly after ``values`` in the sort order, as disjoint conditions (OR them).

    Each is equalities on a prefix of the keys and one range on the next: an index seek
    each, where a single OR of them makes the database walk the index from its start.
    """
    parts = []
    for i, (col, direction, field) in enumerate(keys):
        eqs = [
            keys[j][0].is_(None) if values[j] is None else keys[j][0] == values[j] for j in range(i)
        ]
        v = values[i]
        if direction == "asc":  # NULL first
            parts.append(and_(*eqs, col.is_not(None) if v is None else col > v))
        elif v is not None:  # descending: NULL last, so nothing comes after a NULL
            parts.append(and_(*eqs, col < v))
            if field in NULLABLE:
                parts.append(and_(*eqs, col.is_(None)))
    return parts


# ``in`` filters on these (indexed with seq) become one index walk per value.
SPLIT_IN = ("state", "owner", "name")
SPLIT_MAX = 16

# A label equality matching at most this many jobs is looked up through its index first
# when the page is not in creation order (else the jobs are walked in the sort order).
LABEL_PROBE = 20_000


# A name prefix (``like 'abc*'``) matching at most this many jobs is read from its range of
# the (lower(name), seq) index; a more common one by walking the jobs in order (bounded:
# SCAN_WINDOW).
NAME_PROBE = 20_000

SCAN_WINDOW = 25_000
"""A ``like`` no index narrows (a substring, a label, a common name prefix; not a name
substring on PostgreSQL: pg_trgm) makes a search, newest (or oldest) first, test at most this
many consecutive sequence numbers per page. Such a page may hold fewer jobs than asked, or
none, and a ``next_cursor`` that goes on from where it stopped: the pages together hold
every match, in order."""


def _literal_prefix(f: Filter) -> str | None:
    """The text of a ``name like`` pattern before its first wildcard (None: empty)."""
    if f.op != "like" or f.field != "name" or f.value is None:
        return None
    text = str(f.value)
    cut = min((i for i in (text.find("*"), text.find("?")) if i >= 0), default=len(text))
    return text[:cut] or None


def _ascii_lower(text: str) -> str:
    # SQLite's lower() folds A-Z only.
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


def _unindexed_like(f: Filter, dialect: str) -> bool:
    """Whether ``f`` is a ``like`` no index narrows (a name prefix: unless probed small; a
    name substring on PostgreSQL goes through pg_trgm)."""
    trigrams = dialect == "postgresql" and f.field == "name" and _literal_prefix(f) is None
    return f.op == "like" and not trigrams


def _seq_bounds(conn: Connection) -> tuple[int | None, int | None]:
    """The smallest and largest seq (two queries: SQLite answers each from the end of its
    b-tree, but ``SELECT min(seq), max(seq)`` by reading every row)."""
    low = conn.execute(select(func.min(jobs.c.seq))).scalar()
    high = conn.execute(select(func.max(jobs.c.seq))).scalar()
    return low, high


def _window(conn: Connection, keys: list[Key], cursor: list[Any] | None) -> tuple[int, int] | None:
    """The seq range ``[lo, hi)`` one page of a bounded scan covers, or None (no jobs left).

    Newest first it ends at the cursor (or after the newest job) and spans SCAN_WINDOW
    sequence numbers; oldest first it starts there.
    """
    low, high = _seq_bounds(conn)
    if low is None or high is None:
        return None
    if keys[0][1] == "desc":
        hi = high + 1 if cursor is None else min(cursor[0], high + 1)
        return (max(hi - SCAN_WINDOW, low), hi) if hi > low else None
    lo = low if cursor is None else max(cursor[0] + 1, low)
    return (lo, min(lo + SCAN_WINDOW, high + 1)) if lo <= high else None


def _label_eq(filters: list[Filter]) -> Filter | None:
    for f in filters:
        if f.op == "eq" and f.value is not None and LABEL.match(f.field):
            return f
    return None


def _tag_is(tags: Any, f: Filter) -> list[ColumnElement[bool]]:
    m = LABEL.match(f.field)
    assert m is not None
    return [tags.c.key == m.group(1), _compare(tags.c.value, "eq", "label", f.value)]


def _render(
    row: Any, fields: tuple[str, ...] | list[str], labels: dict[str, str]
) -> dict[str, Any]:
    m = row._mapping
    out: dict[str, Any] = {}
    for f in fields:
        if f == "labels":
            out["labels"] = labels
        elif f in TIME_FIELDS:
            value = m[f]
            out[f] = rfc3339(value if value.tzinfo else value.replace(tzinfo=UTC))
        elif f == "logs":
            out["logs"] = m["logs"] or []  # the same as GET /api/v1/jobs/{id}
        elif f == "spec":
            # Keys with a leading underscore are the server's own notes, not the job's.
            out["spec"] = {k: v for k, v in m["spec"].items() if not k.startswith("_")}
        else:
            out[f] = m["group_id" if f == "group" else f]
    return out


async def search(
    db: Database,
    req: SearchRequest,
    fields: list[str] | tuple[str, ...],
    owner: Scope = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of matching jobs as dicts of ``fields``, and the cursor of the next page."""
    return await db.read(_search, req, fields, owner)


def _search(
    conn: Connection,
    req: SearchRequest,
    fields: list[str] | tuple[str, ...],
    owner: Scope,
) -> tuple[list[dict[str, Any]], str | None]:
    keys = _sort_columns(req.sort)
    wanted = [COLUMNS[f].label("group_id" if f == "group" else f) for f in fields if f in COLUMNS]
    source: Any = jobs
    filters = list(req.filters)
    conds: list[ColumnElement[bool]] = []
    label = _label_eq(filters)
    if label is not None and len(keys) == 1:
        # Newest (or oldest) first with a label: walk that label's (key, value, job_seq)
        # index in order and stop after one page, instead of testing job after job.
        filters.remove(label)
        tags = job_tags.alias("by_label")
        source = tags.join(jobs, jobs.c.seq == tags.c.job_seq)
        conds += _tag_is(tags, label)
        keys = [(tags.c.job_seq, keys[0][1], "seq")]
    elif label is not None:
        # Another order: a rare label is best found through its index, a common one by
        # walking the jobs in the sort order; count (up to a bound) which it is.
        tag = _tag_is(job_tags, label)
        probe = select(literal(1)).select_from(job_tags).where(*tag).limit(LABEL_PROBE + 1)
        if conn.execute(select(func.count()).select_from(probe.subquery())).scalar_one() <= (
            LABEL_PROBE
        ):
            filters.remove(label)
            conds.append(jobs.c.seq.in_(select(job_tags.c.job_seq).where(*tag)))
    dialect = conn.dialect.name
    by_seq = len(keys) == 1 and source is jobs
    narrowed = False
    by_prefix = next((f for f in filters if _literal_prefix(f) is not None), None)
    if by_prefix is not None and by_seq:
        # The range of lower(name) the prefix spans: when it is small, read the page's
        # seqs from the (lower(name), seq) index alone rather than walking every job (on
        # PostgreSQL too: its estimate of a prefix's jobs was off by 10 times either way).
        lower = func.lower(jobs.c.name)
        if dialect == "sqlite":
            folded = _ascii_lower(_literal_prefix(by_prefix) or "")
            span = [lower >= folded, lower < folded + "\U0010ffff"]
        else:  # PostgreSQL makes the bytewise range of a LIKE prefix itself
            prefix = _pattern(_literal_prefix(by_prefix)) + "%"
            span = [lower.like(func.lower(prefix), escape="\\")]
        probe = select(literal(1)).select_from(jobs).where(*span).limit(NAME_PROBE + 1)
        if conn.execute(select(func.count()).select_from(probe.subquery())).scalar_one() <= (
            NAME_PROBE
        ):
            narrowed = True
            # The pattern as lower(name) LIKE lower(pattern), the same on SQLite, tested on
            # the index entry: no job is read for a candidate that does not match.
            filters.remove(by_prefix)
            conds += [*span, lower.like(func.lower(_pattern(by_prefix.value)), escape="\\")]
    window = None
    if by_seq and not narrowed and any(_unindexed_like(f, dialect) for f in filters):
        cursor_values = _decode(req.cursor, keys) if req.cursor else None
        window = _window(conn, keys, cursor_values)
        if window is None:
            return [], None
        conds += [jobs.c.seq >= window[0], jobs.c.seq < window[1]]
    split: list[ColumnElement[bool]] = [literal(True)]
    if len(keys) == 1 and source is jobs:
        # Newest first among a few states (owners, names): one walk of the (column, seq)
        # index per value, merged, rather than sorting every match.
        for f in filters:
            if f.op == "in" and f.field in SPLIT_IN and len(f.value) <= SPLIT_MAX:
                filters.remove(f)
                values = dict.fromkeys(_coerce(f.field, v) for v in f.value)  # each once
                split = [_compare(COLUMNS[f.field], "eq", f.field, v) for v in values]
                break
    conds += _conditions(filters, owner)
    sort_cols = [k[0].label(f"_k{i}") for i, k in enumerate(keys)]
    base = select(jobs.c.id.label("_id"), *wanted, *sort_cols).select_from(source).where(*conds)
    order = [_order(k) for k in keys]
    after = _after(keys, _decode(req.cursor, keys)) if req.cursor else [literal(True)]
    parts = [and_(a, b) for a in after for b in split]
    if len(parts) == 1 and narrowed and by_seq:
        # The page's seqs from the index (covering: no job is read for a candidate that
        # does not make the page), then those jobs.
        # Sorting by seq + 0 keeps the database off walking every job in seq order.
        by_value = (jobs.c.seq + 0).desc() if keys[0][1] == "desc" else (jobs.c.seq + 0).asc()
        page = (
            select(jobs.c.seq)
            .where(*conds, parts[0])
            .order_by(by_value)
            .limit(req.limit + 1)
            .scalar_subquery()
        )
        stmt = (
            select(jobs.c.id.label("_id"), *wanted, *sort_cols)
            .where(jobs.c.seq.in_(page))
            .order_by(*order)
        )
    elif len(parts) == 1:
        stmt = base.where(parts[0]).order_by(*order).limit(req.limit + 1)
    else:
        # One ordered, limited query per disjoint range, merged: every one is an index
        # seek, so a page deep into a multi-key order costs what the first one does.
        pages = [
            select(*p.c)
            for p in (
                base.where(cond).order_by(*order).limit(req.limit + 1).subquery() for cond in parts
            )
        ]
        merged = union_all(*pages).subquery()
        stmt = (
            select(*merged.c)
            .order_by(*(_order((merged.c[f"_k{i}"], k[1], k[2])) for i, k in enumerate(keys)))
            .limit(req.limit + 1)
        )
    rows = conn.execute(stmt).all()
    more = len(rows) > req.limit
    rows = rows[: req.limit]
    labels: dict[str, dict[str, str]] = defaultdict(dict)
    if "labels" in fields and rows:
        ids = [r._mapping["_id"] for r in rows]
        for job_id, key, value in conn.execute(
            select(job_tags.c.job_id, job_tags.c.key, job_tags.c.value).where(
                job_tags.c.job_id.in_(ids)
            )
        ).all():
            labels[job_id][key] = value
    items = [_render(r, fields, labels[r._mapping["_id"]]) for r in rows]
    cursor = None
    if more and rows:
        last = rows[-1]._mapping
        cursor = _encode(keys, [last[f"_k{i}"] for i in range(len(keys))])
    elif window is not None:
        # The window is done: go on past it (strictly after its last seq).
        lo, hi = window
        first, last_seq = _seq_bounds(conn)
        if first is None or last_seq is None:
            pass  # every job was deleted meanwhile: nothing is left to page through
        elif keys[0][1] == "desc" and lo > first:
            cursor = _encode(keys, [lo])
        elif keys[0][1] == "asc" and hi <= last_seq:
            cursor = _encode(keys, [hi - 1])
    return items, cursor


async def summary(db: Database, req: SummaryRequest, owner: Scope = None) -> list[dict[str, Any]]:
    """Counts of matching jobs grouped by ``req.group_by``, largest groups first."""
    return await db.read(_summary, req, owner)


def _summary(conn: Connection, req: SummaryRequest, owner: Scope) -> list[dict[str, Any]]:
    n = func.count().label("count")
    labels = [LABEL.match(f) for f in req.group_by]
    first = labels[0]
    if len(labels) == 1 and first is not None and not req.filters and owner is None:
        # One label over every job: its (key, value, job_seq) index alone, and the jobs
        # without it by difference (one read transaction: the counts agree).
        by_value = conn.execute(
            select(job_tags.c.value, func.count())
            .where(job_tags.c.key == first.group(1))
            .group_by(job_tags.c.value)
        ).all()
        counts: list[tuple[str | None, int]] = [(v, c) for v, c in by_value]
        total = conn.execute(select(func.count()).select_from(jobs)).scalar_one()
        if total > sum(c for _v, c in counts):
            counts.append((None, total - sum(c for _v, c in counts)))
        counts.sort(key=lambda vc: -vc[1])
        return [{req.group_by[0]: v, "count": c} for v, c in counts]
    source: Any = jobs
    cols = []
    for i, (f, m) in enumerate(zip(req.group_by, labels, strict=True)):
        if m is None:
            cols.append(COLUMNS[f].label(f"_g{i}"))
        else:  # a job without the label is in its null group
            tags = job_tags.alias(f"group_{i}")
            on = and_(tags.c.job_id == jobs.c.id, tags.c.key == m.group(1))
            source = source.outerjoin(tags, on)
            cols.append(tags.c.value.label(f"_g{i}"))
    stmt = (
        select(*cols, n)
        .select_from(source)
        .where(where(req.filters, owner))
        .group_by(*(c.name for c in cols))
        .order_by(n.desc())
    )
    rows = conn.execute(stmt).all()

    def value(v: Any) -> Any:
        return rfc3339(v if v.tzinfo else v.replace(tzinfo=UTC)) if isinstance(v, datetime) else v

    return [
        {**{f: value(r._mapping[f"_g{i}"]) for i, f in enumerate(req.group_by)}, "count": r.count}
        for r in rows
    ]
