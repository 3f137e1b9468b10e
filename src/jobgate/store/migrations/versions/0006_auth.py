"""authentication: service tokens, credentials carried by jobs, sharing jobs by group

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_tokens",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("name", sa.Text()),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("scopes", sa.String(64), nullable=False),
        sa.Column("groups", sa.Text()),
        sa.Column("created_by", sa.String(255)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_service_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_service_tokens_token_hash"),
    )
    op.create_table(
        "job_credentials",
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name="fk_job_credentials_job_id_jobs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", name="pk_job_credentials"),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("share_group", sa.String(255)))
    op.create_index("ix_jobs_share_group_seq", "jobs", ["share_group", "seq"])


def downgrade() -> None:
    op.drop_index("ix_jobs_share_group_seq", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("share_group")
    op.drop_table("job_credentials")
    op.drop_table("service_tokens")
