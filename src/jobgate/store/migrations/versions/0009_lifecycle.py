"""lifecycle: automatic retries, the time a job entered its state, watched clocks,
heartbeats and the stalled flag

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


# Plain ALTER TABLE, like 0008: a batch rebuild of ``jobs`` would drop every job's events.
def upgrade() -> None:
    op.add_column("jobs", sa.Column("retries", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("state_since", sa.DateTime(timezone=True)))
    op.add_column("jobs", sa.Column("watched", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("heartbeat_at", sa.DateTime(timezone=True)))
    op.add_column("jobs", sa.Column("heartbeat", sa.JSON()))
    op.add_column("jobs", sa.Column("stalled", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_jobs_watched_state", "jobs", ["watched", "state"])


def downgrade() -> None:
    op.drop_index("ix_jobs_watched_state", table_name="jobs")
    for column in ("stalled", "heartbeat", "heartbeat_at", "watched", "state_since", "retries"):
        op.drop_column("jobs", column)
