"""native API: groups, reschedules, application status, idempotency keys, sandboxes

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("group_id", sa.String(36)))
        batch.add_column(sa.Column("reschedules", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("app_status", sa.Text()))
        batch.add_column(sa.Column("output_sandbox", sa.String(64)))
    op.create_index("ix_jobs_group_id_seq", "jobs", ["group_id", "seq"])
    with op.batch_alter_table("job_events") as batch:
        batch.add_column(sa.Column("app_status", sa.Text()))
        batch.add_column(sa.Column("owner", sa.String(255)))
    op.create_index("ix_job_events_owner_seq", "job_events", ["owner", "seq"])
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(255), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer()),
        sa.Column("response", sa.JSON()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name="pk_idempotency_keys"),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])
    op.create_table(
        "sandboxes",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.String(255)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name="pk_sandboxes"),
    )


def downgrade() -> None:
    op.drop_table("sandboxes")
    op.drop_table("idempotency_keys")
    op.drop_index("ix_job_events_owner_seq", "job_events")
    with op.batch_alter_table("job_events") as batch:
        batch.drop_column("owner")
        batch.drop_column("app_status")
    op.drop_index("ix_jobs_group_id_seq", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("output_sandbox")
        batch.drop_column("app_status")
        batch.drop_column("reschedules")
        batch.drop_column("group_id")
