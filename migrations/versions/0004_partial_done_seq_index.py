"""Index only finished jobs by done_seq: cheaper bulk ingest, same exporter scans.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FINISHED = sa.text("done_seq IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_jobs_done_seq", "jobs")
    op.create_index(
        "ix_jobs_done_seq",
        "jobs",
        ["run_id", "done_seq"],
        sqlite_where=_FINISHED,
        postgresql_where=_FINISHED,
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_done_seq", "jobs")
    op.create_index("ix_jobs_done_seq", "jobs", ["run_id", "done_seq"])
