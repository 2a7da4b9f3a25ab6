"""Tables of the queue. Alembic migrations in `migrations/` create exactly this schema."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

metadata = MetaData()

# SQLite only makes INTEGER PRIMARY KEY an alias of its rowid; PostgreSQL wants BIGINT for
# tables that may outgrow 2**31 rows.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("out_path", Text, nullable=False, unique=True),
    Column("input_path", Text, nullable=False),
    Column("input_digest", Text, nullable=False),
    Column("state", String(16), nullable=False),  # ingesting | ready
    Column("total_jobs", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("active_s", Float, nullable=False, default=0.0),
    # Results get a sequence number when recorded; the exporter's watermark says how far the
    # results file reflects them and at which byte offset that prefix ends.
    Column("next_seq", BigInteger, nullable=False, default=0),
    Column("export_seq", BigInteger, nullable=False, default=0),
    Column("export_offset", BigInteger, nullable=False, default=0),
    Column("owner", Text),
    Column("heartbeat_at", Float),
    Column("stop_reason", Text),
    Column("limits_json", Text),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("line", Integer, nullable=False),
    Column("custom_id", Text, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("metadata", LargeBinary),
    Column("est_tokens", Integer, nullable=False, default=0),
    # The body's model, kept apart for usage and cost per model without parsing bodies.
    Column("model", Text, nullable=False, default="", server_default=text("''")),
    # pending | running | retry | done | failed
    Column("state", String(8), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False, default=0.0),
    Column("lease_owner", Text),
    Column("lease_expires_at", Float),
    Column("status_code", Integer),
    Column("request_id", Text),
    Column("response", LargeBinary),
    Column("error_code", Text),
    Column("error_message", Text),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("done_seq", BigInteger),
    Column("finished_at", Float),
    # The result was served from the response cache (no request was sent, nothing was paid).
    Column("cached", Boolean, nullable=False, default=False, server_default=false()),
    UniqueConstraint("run_id", "custom_id", name="uq_jobs_run_custom_id"),
    Index("ix_jobs_claim", "run_id", "state", "next_attempt_at", "id"),
    # Partial: most rows are unfinished for most of a run, and an index that skips them makes
    # bulk ingest about 20% faster while still serving the exporter's "done_seq > n" scans.
    Index(
        "ix_jobs_done_seq",
        "run_id",
        "done_seq",
        sqlite_where=text("done_seq IS NOT NULL"),
        postgresql_where=text("done_seq IS NOT NULL"),
    ),
)

attempt_errors = Table(
    "attempt_errors",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("job_id", BigInteger, nullable=False),
    Column("at", Float, nullable=False),
    Column("status_code", Integer),
    Column("code", Text, nullable=False),
    Column("message", Text, nullable=False),
    Index("ix_attempt_errors_run", "run_id", "id"),
)

# Provider answers keyed by runner.cache.policy.cache_key, shared by every run in the database.
response_cache = Table(
    "response_cache",
    metadata,
    Column("key", Text, primary_key=True),
    Column("body", LargeBinary, nullable=False),
    Column("model", Text, nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),  # NULL: never expires
    Column("hits", Integer, nullable=False, default=0),
    Index("ix_response_cache_created_at", "created_at"),
)
