"""the dispatcher's claim order as an index: backend, state, priority (descending), seq

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Without it a claim sorts every queued job of the backend (17 ms at 13,000 queued on
    # SQLite); with it the claim reads its batch straight off the index. The old
    # (backend, state) index is this one's prefix.
    op.create_index(
        "ix_jobs_backend_state_priority_seq",
        "jobs",
        ["backend", "state", sa.text("priority DESC"), "seq"],
    )
    op.drop_index("ix_jobs_backend_state", "jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_backend_state", "jobs", ["backend", "state"])
    op.drop_index("ix_jobs_backend_state_priority_seq", "jobs")
