"""The queue: runs, jobs and attempt errors.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("out_path", sa.Text, nullable=False, unique=True),
        sa.Column("input_path", sa.Text, nullable=False),
        sa.Column("input_digest", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("total_jobs", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.Column("active_s", sa.Float, nullable=False),
        sa.Column("next_seq", sa.BigInteger, nullable=False),
        sa.Column("export_seq", sa.BigInteger, nullable=False),
        sa.Column("export_offset", sa.BigInteger, nullable=False),
        sa.Column("owner", sa.Text),
        sa.Column("heartbeat_at", sa.Float),
        sa.Column("stop_reason", sa.Text),
        sa.Column("limits_json", sa.Text),
    )
    op.create_table(
        "jobs",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("line", sa.Integer, nullable=False),
        sa.Column("custom_id", sa.Text, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("metadata", sa.LargeBinary),
        sa.Column("est_tokens", sa.Integer, nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("lease_owner", sa.Text),
        sa.Column("lease_expires_at", sa.Float),
        sa.Column("status_code", sa.Integer),
        sa.Column("request_id", sa.Text),
        sa.Column("response", sa.LargeBinary),
        sa.Column("error_code", sa.Text),
        sa.Column("error_message", sa.Text),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("done_seq", sa.BigInteger),
        sa.Column("finished_at", sa.Float),
        sa.UniqueConstraint("run_id", "custom_id", name="uq_jobs_run_custom_id"),
    )
    op.create_index("ix_jobs_claim", "jobs", ["run_id", "state", "next_attempt_at", "id"])
    op.create_index("ix_jobs_done_seq", "jobs", ["run_id", "done_seq"])
    op.create_table(
        "attempt_errors",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("job_id", sa.BigInteger, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_attempt_errors_run", "attempt_errors", ["run_id", "id"])


def downgrade() -> None:
    op.drop_table("attempt_errors")
    op.drop_index("ix_jobs_done_seq", "jobs")
    op.drop_index("ix_jobs_claim", "jobs")
    op.drop_table("jobs")
    op.drop_table("runs")
