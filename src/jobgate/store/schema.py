"""Tables. Alembic migrations (``migrations/versions``) create them; a test keeps both equal."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
SeqType = BigInteger().with_variant(Integer(), "sqlite")

jobs = Table(
    "jobs",
    metadata,
    # seq orders jobs newest-first and is the keyset for paging; id is the public name.
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("state", String(16), nullable=False),
    Column("name", Text),
    Column("owner", String(255)),
    Column("backend", String(64), nullable=False),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("attempt", Integer, nullable=False, server_default="0"),
    Column("native_id", String(255)),
    Column("detail", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("logs", JSON),
    # Native API (migration 0002): bulk/parametric group, reschedules, application status.
    Column("group_id", String(36)),
    Column("reschedules", Integer, nullable=False, server_default="0"),
    Column("app_status", Text),
    Column("output_sandbox", String(64)),
    # Authorization (migration 0006): the group whose members also see this job.
    Column("share_group", String(255)),
    # Backends (migration 0008): a job waiting after a transient submit error is claimed
    # again from not_before on; waiting_since bounds the wait (the backend's patience).
    Column("not_before", DateTime(timezone=True)),
    Column("waiting_since", DateTime(timezone=True)),
    # Lifecycle (migration 0009): automatic retries made; since when the job is in its
    # state (per-state timeouts); whether the dispatcher watches its clock (a timeout or
    # heartbeats, 1/0); its last heartbeat; whether it is stalled (a flag on RUNNING).
    Column("retries", Integer, nullable=False, server_default="0"),
    Column("state_since", DateTime(timezone=True)),
    Column("watched", Integer, nullable=False, server_default="0"),
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("heartbeat", JSON),
    Column("stalled", Integer, nullable=False, server_default="0"),
    # Leases (migration 0011): the dispatcher process that drives the job while it is
    # active (see the dispatchers table); a job whose dispatcher's lease ran out is taken
    # over by another.
    Column("dispatcher", String(64)),
    # Never reuse a deleted row's seq: page tokens and event-stream cursors rely on it.
    sqlite_autoincrement=True,
)
Index(None, jobs.c.state, jobs.c.seq)
# NULL first, the searches' order (SQLite's own; migration 0012 on PostgreSQL).
Index("ix_jobs_name_seq", jobs.c.name.nulls_first(), jobs.c.seq)
Index(None, jobs.c.owner, jobs.c.seq)
# Migration 0010: the dispatcher's claim walks one backend's queue in dispatch order
# (priority, then age) and stops after a batch, instead of sorting the whole backlog.
Index(
    "ix_jobs_backend_state_priority_seq",
    jobs.c.backend,
    jobs.c.state,
    jobs.c.priority.desc(),
    jobs.c.seq,
)
# Migration 0004: owner or group with state (filters, summaries); sorting by priority.
Index(None, jobs.c.owner, jobs.c.state, jobs.c.seq)
Index(None, jobs.c.group_id, jobs.c.state, jobs.c.seq)
Index(None, jobs.c.priority, jobs.c.seq)
Index(None, jobs.c.state, jobs.c.priority, jobs.c.seq)
# Migration 0005: creation-time windows; one owner's jobs sorted by priority or name.
Index(None, jobs.c.created_at)
Index(None, jobs.c.owner, jobs.c.priority, jobs.c.seq)
Index("ix_jobs_owner_name_seq", jobs.c.owner, jobs.c.name.nulls_first(), jobs.c.seq)
# Migration 0006: the jobs shared with a group (authorization).
Index(None, jobs.c.share_group, jobs.c.seq)
# Migration 0009: the jobs whose clock the dispatcher watches, by state.
Index(None, jobs.c.watched, jobs.c.state)
# Migration 0012: name searches (case-insensitive, as lower(name) LIKE lower(pattern)). A
# prefix (``like 'abc*'``) is one range of lower(name), bytewise on PostgreSQL; a substring
# (``like '*abc*'``) goes through the trigrams of pg_trgm, on PostgreSQL only.
Index(
    "ix_jobs_lower_name_seq",
    func.lower(jobs.c.name).label("lower_name"),
    jobs.c.seq,
    postgresql_ops={"lower_name": "text_pattern_ops"},
    postgresql_include=["name"],
)
Index(
    "ix_jobs_lower_name_trgm",
    func.lower(jobs.c.name).label("lower_name"),
    postgresql_using="gin",
    postgresql_ops={"lower_name": "gin_trgm_ops"},
)

# Migration 0011: a dispatcher's active jobs (take-over after its lease ran out).
Index(None, jobs.c.dispatcher, jobs.c.state)

# Migration 0011: one row per running dispatcher process, renewed while it lives. A row
# whose lease_until has passed, or whose process is gone from this host (the same boot,
# the pid no longer running since pid_start), is a dead dispatcher.
dispatchers = Table(
    "dispatchers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("boot_id", String(64), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("pid_start", BigInteger, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("lease_until", DateTime(timezone=True), nullable=False),
    # Space-separated roles only one dispatcher may hold at a time ("webhooks").
    Column("roles", Text, nullable=False, server_default=""),
)

# Migration 0011: progress markers kept in the database, so any process (of any host)
# that takes a role over resumes where the last one stopped (``webhooks``: every event
# up to ``seq`` was delivered or given up).
cursors = Table(
    "cursors",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

job_tags = Table(
    "job_tags",
    metadata,
    Column("job_id", String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
    # The job's seq (migration 0004): label searches walk (key, value, job_seq) newest first.
    Column("job_seq", SeqType),
)
Index(None, job_tags.c.key, job_tags.c.value, job_tags.c.job_seq)

job_events = Table(
    "job_events",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("job_id", String(36), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("from_state", String(16)),
    Column("to_state", String(16), nullable=False),
    Column("detail", Text),
    Column("source", String(32), nullable=False),
    Column("app_status", Text),
    Column("owner", String(255)),
    sqlite_autoincrement=True,
)
Index(None, job_events.c.job_id, job_events.c.seq)
Index(None, job_events.c.owner, job_events.c.seq)

# Idempotency-Key records (IETF draft): one per (caller, key), kept at least 24 hours.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", String(255), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer),
    Column("response", JSON),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
Index(None, idempotency_keys.c.created_at)

# Content-addressed uploads (input and output sandboxes).
sandboxes = Table(
    "sandboxes",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("owner", String(255)),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Migration 0006: service tokens (only their SHA-256 is kept) and credentials jobs carry.
service_tokens = Table(
    "service_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("name", Text),
    Column("owner", String(255), nullable=False),
    Column("scopes", String(64), nullable=False),
    Column("groups", Text),
    Column("created_by", String(255)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
)

job_credentials = Table(
    "job_credentials",
    metadata,
    Column("job_id", String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    # Fernet ciphertext of the submitter's bearer token (see auth/secrets.py).
    Column("secret", Text, nullable=False),
)
