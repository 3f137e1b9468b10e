"""Service tokens: long random bearer tokens an admin creates, kept only as SHA-256.

A token reads ``jgt_<43 url-safe characters>`` (256 random bits): its hash needs no salt
or slow function, since nobody can guess a 256-bit secret, and a plain SHA-256 lookup
costs one indexed read per request. The ``jgt_`` prefix tells it apart from an OIDC JWT.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from pathlib import Path

from jobgate.auth.identity import Caller, Scope, expand, plain_group
from jobgate.auth.namespaces import BOOTSTRAP_ADMIN
from jobgate.auth.secrets import write_private
from jobgate.domain.models import now
from jobgate.store.tokens import TokenRow, TokenStore

PREFIX = "jgt_"
ADMIN_TOKEN_FILE = "admin-token"
BOOTSTRAP_OWNER = BOOTSTRAP_ADMIN

_SCOPE_NAMES = frozenset(s.value for s in Scope)


def looks_like_service_token(token: str) -> bool:
    return token.startswith(PREFIX)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ServiceTokens:
    """Creating, checking, listing and revoking service tokens."""

    def __init__(self, store: TokenStore) -> None:
        self.store = store

    async def create(
        self,
        *,
        owner: str,
        scopes: set[Scope],
        name: str | None = None,
        groups: tuple[str, ...] = (),
        expires_at: datetime | None = None,
        created_by: str | None = None,
    ) -> tuple[TokenRow, str]:
        """A new token's record and its secret (shown once: only its hash is kept).

        ``owner`` is a full owner name (see :func:`jobgate.auth.namespaces.token_owner`).
        """
        secret = PREFIX + secrets.token_urlsafe(32)
        row = await self.store.add(
            token_id="tok_" + secrets.token_hex(8),
            token_hash=token_hash(secret),
            owner=owner,
            scopes=tuple(sorted(scopes)),
            name=name,
            groups=tuple(plain_group(g) for g in groups),
            created_by=created_by,
            expires_at=expires_at,
        )
        return row, secret

    async def authenticate(self, token: str) -> Caller | None:
        """The caller a token stands for; None if unknown, expired or revoked."""
        row = await self.store.by_hash(token_hash(token))
        if row is None or not row.active(now()):
            return None
        scopes = expand({Scope(s) for s in row.scopes if s in _SCOPE_NAMES})
        return Caller(row.owner, "token", scopes, frozenset(row.groups), credential=token)

    async def ensure_admin_token(self, data_dir: Path) -> Path | None:
        """With no active admin token, create one into ``<data_dir>/admin-token`` (0600).

        Returns the file written, or None when an admin token already existed.
        """
        rows = await self.store.list()
        if any(Scope.ADMIN in r.scopes for r in rows):
            return None
        _row, secret = await self.create(
            owner=BOOTSTRAP_OWNER,
            scopes={Scope.ADMIN},
            name="bootstrap admin token",
            created_by="jobgate serve",
        )
        path = data_dir / ADMIN_TOKEN_FILE
        write_private(path, secret + "\n")
        return path
