"""search at scale: time windows, and a caller's own jobs sorted by priority or name

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A creation-time window far back otherwise walks every newer job (250 ms at 1M jobs).
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
    # With access control most searches are one owner's: sorted by priority or name,
    # deep pages of a busy owner otherwise sort all their jobs (100-190 ms at 1M jobs).
    op.create_index("ix_jobs_owner_priority_seq", "jobs", ["owner", "priority", "seq"])
    op.create_index("ix_jobs_owner_name_seq", "jobs", ["owner", "name", "seq"])


def downgrade() -> None:
    op.drop_index("ix_jobs_owner_name_seq", "jobs")
    op.drop_index("ix_jobs_owner_priority_seq", "jobs")
    op.drop_index("ix_jobs_created_at", "jobs")
