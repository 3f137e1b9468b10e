"""search at scale: tags carry their job's seq; owner+state and priority indexes

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # job_tags.job_seq: a label search walks (key, value, job_seq) newest first and stops
    # after one page, instead of testing every job for the label.
    op.add_column("job_tags", sa.Column("job_seq", _seq))
    op.execute(
        "UPDATE job_tags SET job_seq = (SELECT seq FROM jobs WHERE jobs.id = job_tags.job_id)"
    )
    op.drop_index("ix_job_tags_key_value", "job_tags")
    op.create_index("ix_job_tags_key_value_job_seq", "job_tags", ["key", "value", "job_seq"])
    # owner + state filters (and summaries by both); sorting by priority (and its paging).
    op.create_index("ix_jobs_owner_state_seq", "jobs", ["owner", "state", "seq"])
    op.create_index("ix_jobs_priority_seq", "jobs", ["priority", "seq"])


def downgrade() -> None:
    op.drop_index("ix_jobs_priority_seq", "jobs")
    op.drop_index("ix_jobs_owner_state_seq", "jobs")
    op.drop_index("ix_job_tags_key_value_job_seq", "job_tags")
    op.create_index("ix_job_tags_key_value", "job_tags", ["key", "value"])
    with op.batch_alter_table("job_tags") as batch:
        batch.drop_column("job_seq")
