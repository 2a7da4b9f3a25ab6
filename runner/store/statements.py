"""The statements the queue's hot path runs many times, built once, and their parameters."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Update, bindparam, func, update
from sqlalchemy.engine import Dialect

from runner.store.protocol import Outcome, ResultRow
from runner.store.schema import jobs, runs


def result_row(row: Any) -> ResultRow:
    seq, job_id, custom_id, state, status, request_id, response, code, message, meta, cached = row
    return ResultRow(
        seq,
        job_id,
        custom_id,
        state,
        status,
        request_id,
        response,
        code,
        message,
        meta,
        bool(cached),
    )


RESULT_COLUMNS = (
    jobs.c.done_seq,
    jobs.c.id,
    jobs.c.custom_id,
    jobs.c.state,
    jobs.c.status_code,
    jobs.c.request_id,
    jobs.c.response,
    jobs.c.error_code,
    jobs.c.error_message,
    jobs.c.metadata,
    jobs.c.cached,
)

# An outcome is saved only while this process still holds the job's lease.
_LEASED = (
    jobs.c.id == bindparam("b_id"),
    jobs.c.lease_owner == bindparam("b_owner"),
    jobs.c.state == "running",
)

FINAL_UPDATE = (
    update(jobs)
    .where(*_LEASED)
    .values(
        state=bindparam("b_state"),
        attempts=jobs.c.attempts + 1,
        status_code=bindparam("b_status"),
        request_id=bindparam("b_request_id"),
        response=bindparam("b_response"),
        error_code=bindparam("b_error_code"),
        error_message=bindparam("b_error_message"),
        prompt_tokens=jobs.c.prompt_tokens + bindparam("b_prompt"),
        completion_tokens=jobs.c.completion_tokens + bindparam("b_completion"),
        done_seq=bindparam("b_seq"),
        finished_at=bindparam("b_now"),
        cached=bindparam("b_cached"),
        lease_owner=None,
        lease_expires_at=None,
    )
)

REQUEUE_UPDATE = (
    update(jobs)
    .where(*_LEASED)
    .values(
        state=bindparam("b_state"),
        attempts=jobs.c.attempts + bindparam("b_spent"),
        next_attempt_at=bindparam("b_at"),
        # A job handed back unsent keeps the last error it had.
        status_code=func.coalesce(bindparam("b_status"), jobs.c.status_code),
        error_code=func.coalesce(bindparam("b_error_code"), jobs.c.error_code),
        error_message=func.coalesce(bindparam("b_error_message"), jobs.c.error_message),
        prompt_tokens=jobs.c.prompt_tokens + bindparam("b_prompt"),
        completion_tokens=jobs.c.completion_tokens + bindparam("b_completion"),
        lease_owner=None,
        lease_expires_at=None,
    )
)


class DriverStatement:
    """A statement compiled once to the driver's own SQL, taking positional rows.

    Bulk writes through it skip SQLAlchemy's parameter processing for every row, which cost
    about 10 us a row, more than SQLite's own work on it.
    """

    def __init__(self, stmt: Update, dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        if compiled.positiontup is None:
            raise RuntimeError(f"{dialect.name} does not take positional parameters")
        self.sql = str(compiled)
        # Literals in the statement (a lease set to NULL, attempts + 1) are parameters too.
        self._constants = dict(compiled.params)
        self._pick = operator.itemgetter(*compiled.positiontup)

    def rows(self, params: Iterable[dict[str, Any]]) -> list[tuple[Any, ...]]:
        """Named parameters, one dict per row, as the driver's positional tuples."""
        constants, pick = self._constants, self._pick
        return [pick(constants | p) for p in params]


def _common(o: Outcome, owner: str) -> dict[str, Any]:
    return dict(
        b_id=o.job_id,
        b_owner=owner,
        b_state=o.state,
        b_status=o.status_code,
        b_error_code=o.error_code,
        b_error_message=o.error_message,
        b_prompt=o.prompt_tokens,
        b_completion=o.completion_tokens,
    )


def final_params(
    finals: Sequence[Outcome], first_seq: int, owner: str, now: float
) -> list[dict[str, Any]]:
    return [
        _common(o, owner)
        | dict(
            b_request_id=o.request_id,
            b_response=o.response,
            b_seq=first_seq + i,
            b_now=now,
            b_cached=o.cached,
        )
        for i, o in enumerate(finals)
    ]


def requeue_params(outcomes: Sequence[Outcome], owner: str) -> list[dict[str, Any]]:
    return [
        _common(o, owner) | dict(b_spent=1 if o.state == "retry" else 0, b_at=o.retry_at)
        for o in outcomes
    ]


def error_rows(run_id: int, outcomes: Sequence[Outcome], now: float) -> list[dict[str, Any]]:
    return [
        dict(
            run_id=run_id,
            job_id=o.job_id,
            at=now,
            status_code=o.status_code,
            code=o.error_code,
            message=o.error_message or "",
        )
        for o in outcomes
        if o.error_code and o.state in ("retry", "failed")
    ]


def watermark_update(run_id: int, seq: int, offset: int) -> Any:
    return update(runs).where(runs.c.id == run_id).values(export_seq=seq, export_offset=offset)
