"""name searches at scale: a (lower(name), seq) index; on PostgreSQL its trigrams, and
name indexes in the searches' order (NULL first)

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

log = logging.getLogger("jobgate.store")


def _trigram_schema(bind: sa.Connection) -> str | None:
    """The schema holding pg_trgm, installing it when it is missing (None: it cannot be).

    A new install goes to ``public`` when that schema takes it: an extension exists once per
    database, and one installed into a schema that is dropped later takes every index using
    it along, in every schema.
    """

    def installed() -> str | None:
        schema: str | None = bind.execute(
            sa.text(
                "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n"
                " ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'"
            )
        ).scalar()
        return schema

    if (schema := installed()) is not None:
        return schema
    public = bind.execute(
        sa.text(
            "SELECT has_schema_privilege(n.oid, 'CREATE') FROM pg_namespace n"
            " WHERE n.nspname = 'public'"
        )
    ).scalar()
    try:
        with bind.begin_nested():
            where = " SCHEMA public" if public else ""
            bind.execute(sa.text(f"CREATE EXTENSION IF NOT EXISTS pg_trgm{where}"))
    except sa.exc.DBAPIError as exc:
        log.warning("pg_trgm is not available (%s): substring name searches scan the jobs", exc)
        return None
    return installed()


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # Name searches compare lower(name) (what ILIKE does): bytewise (text_pattern_ops),
        # a prefix is one range of this index whatever the collation. With the name itself
        # in it, PostgreSQL reads the range alone (an index-only scan of an expression needs
        # the expression's columns).
        op.execute(
            "CREATE INDEX ix_jobs_lower_name_seq ON jobs"
            " (lower(name) text_pattern_ops, seq) INCLUDE (name)"
        )
        schema = _trigram_schema(bind)
        if schema is not None:
            # lower(name) LIKE '%part%' finds its candidates through the trigrams of 'part'.
            op.execute(
                "CREATE INDEX ix_jobs_lower_name_trgm ON jobs"
                f' USING gin (lower(name) "{schema}".gin_trgm_ops)'
            )
        # Searches sort names NULL first (SQLite's order); PostgreSQL's indexes put NULL
        # last unless told, and so served no page sorted by name (a sort of every job).
        for name, columns in (
            ("ix_jobs_name_seq", "name NULLS FIRST, seq"),
            ("ix_jobs_owner_name_seq", "owner, name NULLS FIRST, seq"),
        ):
            op.drop_index(name, "jobs")
            op.execute(f"CREATE INDEX {name} ON jobs ({columns})")
        # Statistics of the new expression (lower(name)): without them the planner guesses
        # how many names a prefix matches, and autovacuum would not gather them soon.
        op.execute("ANALYZE jobs")
    else:
        # SQLite's ILIKE is lower(name) LIKE lower(pattern): a name prefix is a range here.
        # SQLite has no trigram index: substring searches scan a bounded window instead.
        op.execute("CREATE INDEX ix_jobs_lower_name_seq ON jobs (lower(name), seq)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_jobs_lower_name_trgm")
        op.drop_index("ix_jobs_owner_name_seq", "jobs")
        op.create_index("ix_jobs_owner_name_seq", "jobs", ["owner", "name", "seq"])
        op.drop_index("ix_jobs_name_seq", "jobs")
        op.create_index("ix_jobs_name_seq", "jobs", ["name", "seq"])
    op.drop_index("ix_jobs_lower_name_seq", "jobs")
