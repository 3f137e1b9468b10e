"""search at scale: tags carry their job's seq; owner/group+state and priority indexes

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
    # SQLite has no statistics to tell that owner or group narrows more than state: with
    # both columns in one index, a filter on both uses it. A group holds at most a
    # parametric submission (10,000 jobs), so this index serves a group alone as well.
    op.create_index("ix_jobs_owner_state_seq", "jobs", ["owner", "state", "seq"])
    op.drop_index("ix_jobs_group_id_seq", "jobs")
    op.create_index("ix_jobs_group_id_state_seq", "jobs", ["group_id", "state", "seq"])
    # Sorting by priority, overall and within a state (the queue), and its deep pages.
    op.create_index("ix_jobs_priority_seq", "jobs", ["priority", "seq"])
    op.create_index("ix_jobs_state_priority_seq", "jobs", ["state", "priority", "seq"])


def downgrade() -> None:
    op.drop_index("ix_jobs_state_priority_seq", "jobs")
    op.drop_index("ix_jobs_priority_seq", "jobs")
    op.drop_index("ix_jobs_group_id_state_seq", "jobs")
    op.create_index("ix_jobs_group_id_seq", "jobs", ["group_id", "seq"])
    op.drop_index("ix_jobs_owner_state_seq", "jobs")
    op.drop_index("ix_job_tags_key_value_job_seq", "job_tags")
    op.create_index("ix_job_tags_key_value", "job_tags", ["key", "value"])
    with op.batch_alter_table("job_tags") as batch:
        batch.drop_column("job_seq")
