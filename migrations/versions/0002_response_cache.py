"""The response cache table, and a flag on jobs answered from it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "response_cache",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float),
        sa.Column("hits", sa.Integer, nullable=False),
    )
    op.create_index("ix_response_cache_created_at", "response_cache", ["created_at"])
    # Batch mode so SQLite can take the change; the server default fills existing rows.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("cached", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("cached")
    op.drop_index("ix_response_cache_created_at", "response_cache")
    op.drop_table("response_cache")
