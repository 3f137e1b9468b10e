"""backends: when a job waiting after a transient submit error may be tried again, and
since when it waits

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


# Plain ALTER TABLE (SQLite ≥ 3.35 drops columns too): a batch rebuild of ``jobs`` would
# drop the old table, and with it, through ON DELETE CASCADE, every job's events.
def upgrade() -> None:
    op.add_column("jobs", sa.Column("not_before", sa.DateTime(timezone=True)))
    op.add_column("jobs", sa.Column("waiting_since", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("jobs", "waiting_since")
    op.drop_column("jobs", "not_before")
