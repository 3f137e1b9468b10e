"""Idempotency-Key records: the first request with a key runs; retries get its answer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from jobgate.domain.models import now
from jobgate.store.access import Database
from jobgate.store.schema import idempotency_keys as keys


@dataclass(frozen=True, slots=True)
class Claim:
    """Outcome of :meth:`IdempotencyStore.begin`.

    ``status`` is ``new`` (run the request, then :meth:`finish`), ``in_flight`` (the first
    request has not finished), ``mismatch`` (same key, different request) or ``done``
    (``status_code``/``response`` hold the first answer).
    """

    status: str
    status_code: int | None = None
    response: Any = None


def _begin(conn: Connection, scope: str, key: str, request_hash: str, ttl: timedelta) -> Claim:
    at = now()
    conn.execute(delete(keys).where(keys.c.created_at < at - ttl))
    try:
        with conn.begin_nested():
            conn.execute(
                insert(keys).values(scope=scope, key=key, request_hash=request_hash, created_at=at)
            )
        return Claim("new")
    except IntegrityError:
        pass
    row = conn.execute(
        select(keys.c.request_hash, keys.c.status_code, keys.c.response).where(
            keys.c.scope == scope, keys.c.key == key
        )
    ).one()
    if row.request_hash != request_hash:
        return Claim("mismatch")
    if row.status_code is None:
        return Claim("in_flight")
    return Claim("done", row.status_code, row.response)


def _finish(conn: Connection, scope: str, key: str, status_code: int, response: Any) -> None:
    conn.execute(
        update(keys)
        .where(keys.c.scope == scope, keys.c.key == key)
        .values(status_code=status_code, response=response)
    )


def _forget(conn: Connection, scope: str, key: str) -> None:
    conn.execute(delete(keys).where(keys.c.scope == scope, keys.c.key == key))


class IdempotencyStore:
    """Keys are scoped per caller and kept for ``ttl`` (at least 24 hours by default)."""

    def __init__(self, db: Database, ttl: timedelta = timedelta(hours=24)) -> None:
        self.db = db
        self.ttl = ttl

    async def begin(self, scope: str, key: str, request_hash: str) -> Claim:
        return await self.db.write(_begin, scope, key, request_hash, self.ttl)

    async def finish(self, scope: str, key: str, status_code: int, response: Any) -> None:
        await self.db.write(_finish, scope, key, status_code, response)

    async def forget(self, scope: str, key: str) -> None:
        """Drop a key whose request failed before doing anything (the client may retry)."""
        await self.db.write(_forget, scope, key)
