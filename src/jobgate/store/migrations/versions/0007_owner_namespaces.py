"""owner namespaces: every owner becomes ``<namespace>:<name>``

Revision ID: 0007
Revises: 0006

An old owner says nothing of where it came from; the service hands over its rule for
that (``legacy_owner`` in the Alembic attributes, see ``LegacyOwners`` in auth/namespaces.py).
Without it (the plain ``alembic`` CLI), ``admin`` becomes ``jobgate:admin`` and every other
owner ``token:<name>``. Downgrading strips the namespace again.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import context, op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# (table, column) holding an owner name; idempotency keys are scoped by the caller's name.
OWNER_COLUMNS = (
    ("jobs", "owner"),
    ("job_events", "owner"),
    ("sandboxes", "owner"),
    ("service_tokens", "owner"),
    ("idempotency_keys", "scope"),
)
NOT_AN_OWNER = frozenset({"anonymous"})  # the idempotency scope of JOBGATE_AUTH=none


def _fallback(old: str) -> str:
    return "jobgate:admin" if old == "admin" else f"token:{old}"


def _rewrite(rename: Callable[[str], str | None]) -> None:
    conn = op.get_bind()
    for table, column in OWNER_COLUMNS:
        t = sa.table(table, sa.column(column))
        col = t.c[column]
        # One UPDATE per distinct owner: there are few owners, and each walks its index.
        olds = [r[0] for r in conn.execute(sa.select(col).where(col.is_not(None)).distinct())]
        for old in olds:
            new = None if old in NOT_AN_OWNER else rename(old)
            if new is not None and new != old:
                conn.execute(sa.update(t).where(col == old).values({column: new}))


def upgrade() -> None:
    rule: Callable[[str], str] = context.config.attributes.get("legacy_owner") or _fallback
    _rewrite(rule)


def downgrade() -> None:
    _rewrite(lambda owner: owner.partition(":")[2] or owner)
