"""The ``service_tokens`` table: service tokens by the SHA-256 of their secret."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, insert, or_, select, update

from jobgate.domain.models import now, rfc3339
from jobgate.store.access import Database
from jobgate.store.schema import service_tokens


@dataclass(frozen=True, slots=True)
class TokenRow:
    """A service token's record; the secret itself is never stored."""

    id: str
    name: str | None
    owner: str
    scopes: tuple[str, ...]
    groups: tuple[str, ...]
    created_by: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def active(self, at: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > at)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "scopes": list(self.scopes),
            "groups": list(self.groups),
            "created_by": self.created_by,
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.expires_at) if self.expires_at else None,
            "revoked_at": rfc3339(self.revoked_at) if self.revoked_at else None,
        }


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(v for v in (value or "").split(",") if v)


def _row(r: Any) -> TokenRow:
    created = _aware(r.created_at)
    assert created is not None
    return TokenRow(
        id=r.id,
        name=r.name,
        owner=r.owner,
        scopes=_split(r.scopes),
        groups=_split(r.groups),
        created_by=r.created_by,
        created_at=created,
        expires_at=_aware(r.expires_at),
        revoked_at=_aware(r.revoked_at),
    )


def _add(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(service_tokens).values(**values))


def _by_hash(conn: Connection, token_hash: str) -> TokenRow | None:
    r = conn.execute(
        select(service_tokens).where(service_tokens.c.token_hash == token_hash)
    ).first()
    return None if r is None else _row(r)


def _list(conn: Connection, include_inactive: bool) -> list[TokenRow]:
    stmt = select(service_tokens).order_by(service_tokens.c.created_at, service_tokens.c.id)
    if not include_inactive:
        at = now()
        stmt = stmt.where(
            service_tokens.c.revoked_at.is_(None),
            or_(service_tokens.c.expires_at.is_(None), service_tokens.c.expires_at > at),
        )
    return [_row(r) for r in conn.execute(stmt).all()]


def _revoke(conn: Connection, token_id: str) -> TokenRow | None:
    conn.execute(
        update(service_tokens)
        .where(and_(service_tokens.c.id == token_id, service_tokens.c.revoked_at.is_(None)))
        .values(revoked_at=now())
    )
    r = conn.execute(select(service_tokens).where(service_tokens.c.id == token_id)).first()
    return None if r is None else _row(r)


class TokenStore:
    """Async access to service token rows; each method is one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(
        self,
        *,
        token_id: str,
        token_hash: str,
        owner: str,
        scopes: tuple[str, ...],
        name: str | None = None,
        groups: tuple[str, ...] = (),
        created_by: str | None = None,
        expires_at: datetime | None = None,
    ) -> TokenRow:
        row = TokenRow(token_id, name, owner, scopes, groups, created_by, now(), expires_at, None)
        values = {
            "id": token_id,
            "token_hash": token_hash,
            "name": name,
            "owner": owner,
            "scopes": ",".join(scopes),
            "groups": ",".join(groups) or None,
            "created_by": created_by,
            "created_at": row.created_at,
            "expires_at": expires_at,
            "revoked_at": None,
        }
        await self.db.write(_add, values)
        return row

    async def by_hash(self, token_hash: str) -> TokenRow | None:
        return await self.db.read(_by_hash, token_hash)

    async def list(self, *, include_inactive: bool = False) -> list[TokenRow]:
        return await self.db.read(_list, include_inactive)

    async def revoke(self, token_id: str) -> TokenRow | None:
        """Revoke a token (again is a no-op); None if there is no such token."""
        return await self.db.write(_revoke, token_id)
