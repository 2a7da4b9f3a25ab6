"""The few statements that differ between SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Insert, Update, bindparam, false, literal_column, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect

from runner.store.schema import jobs


def insert_ignoring_duplicates(dialect_name: str) -> Insert:
    """INSERT of jobs that skips rows whose (run_id, custom_id) already exists."""
    if dialect_name == "postgresql":
        from sqlalchemy.dialects import postgresql  # about 25 ms of import SQLite runs skip

        return postgresql.insert(jobs).on_conflict_do_nothing(
            index_elements=["run_id", "custom_id"]
        )
    return sqlite.insert(jobs).on_conflict_do_nothing(index_elements=["run_id", "custom_id"])


def claim_statement(
    dialect_name: str, run_id: int, state: str, limit: int, now: float, values: dict[str, Any]
) -> Update:
    """Lease the oldest due jobs of one state; on PostgreSQL, skip rows other workers hold."""
    due = (
        select(jobs.c.id)
        .where(jobs.c.run_id == run_id, jobs.c.state == state, jobs.c.next_attempt_at <= now)
        .order_by(jobs.c.next_attempt_at, jobs.c.id)
        .limit(limit)
    )
    if dialect_name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    return (
        update(jobs)
        .where(jobs.c.id.in_(due))
        .values(**values)
        .returning(
            jobs.c.id,
            jobs.c.custom_id,
            jobs.c.body,
            jobs.c.attempts,
            jobs.c.est_tokens,
            jobs.c.model,
        )
    )


JOB_COLUMNS = ("run_id", "line", "custom_id", "body", "metadata", "est_tokens", "model")

# What every new job starts with, written into the statement as literals: binding the same six
# values for every row cost about a tenth of bulk ingest.
_FRESH_JOB = {
    "state": literal_column("'pending'"),
    "attempts": literal_column("0"),
    "next_attempt_at": literal_column("0.0"),
    "prompt_tokens": literal_column("0"),
    "completion_tokens": literal_column("0"),
    "cached": false(),
}


def job_insert_sql(dialect: Dialect) -> str:
    """The ignoring-duplicates INSERT compiled once to driver SQL, with positional parameters
    in `JOB_COLUMNS` order, so bulk ingest skips per-row parameter processing."""
    values: dict[str, Any] = {name: bindparam(name) for name in JOB_COLUMNS}
    stmt = insert_ignoring_duplicates(dialect.name).values(values | _FRESH_JOB)
    compiled = stmt.compile(dialect=dialect)
    order = compiled.positiontup
    if order is None or tuple(order) != JOB_COLUMNS:
        raise RuntimeError(f"unexpected parameter order for {dialect.name}: {order}")
    return str(compiled)
