"""SQLite: never reuse the seq of a deleted job or event (AUTOINCREMENT)

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Without AUTOINCREMENT, SQLite hands out max(rowid)+1, so deleting the newest job
    # made its event numbers come back and broke resumable streams and webhook dedup.
    # PostgreSQL sequences never go back: nothing to do there.
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in ("jobs", "job_events"):
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in ("jobs", "job_events"):
        with op.batch_alter_table(table, recreate="always"):
            pass
