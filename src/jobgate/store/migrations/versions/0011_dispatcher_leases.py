"""dispatcher leases: the dispatchers table, which dispatcher drives each job, and
cursors kept in the database

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dispatchers",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("boot_id", sa.String(64), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("pid_start", sa.BigInteger, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("roles", sa.Text, nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="pk_dispatchers"),
    )
    op.create_table(
        "cursors",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_cursors"),
    )
    # Plain ALTER TABLE: a batch rebuild of ``jobs`` would drop every job's events. Jobs
    # driven before leases existed have no dispatcher: the first one to start takes them.
    op.add_column("jobs", sa.Column("dispatcher", sa.String(64)))
    op.create_index("ix_jobs_dispatcher_state", "jobs", ["dispatcher", "state"])


def downgrade() -> None:
    op.drop_index("ix_jobs_dispatcher_state", "jobs")
    op.drop_column("jobs", "dispatcher")
    op.drop_table("cursors")
    op.drop_table("dispatchers")
