"""The queue on SQLAlchemy Core: SQLite (WAL, one connection per process) or PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from runner.errors import RunLockedError
from runner.jobfile import Job
from runner.store import dialect, statements
from runner.store.protocol import (
    FINAL_STATES,
    OPEN_STATES,
    ClaimedJob,
    Duplicate,
    ErrorEntry,
    Outcome,
    ResultRow,
    RunRecord,
)
from runner.store.schema import attempt_errors, jobs, runs


def _run_record(row: Row[Any]) -> RunRecord:
    m = row._mapping
    return RunRecord(**{name: m[name] for name in RunRecord.__slots__})


class SqlStore:
    """`Store` on an async SQLAlchemy engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name
        self._job_insert: str | None = None
        self._final_update = statements.DriverStatement(statements.FINAL_UPDATE, engine.dialect)
        self._requeue_update = statements.DriverStatement(statements.REQUEUE_UPDATE, engine.dialect)

    async def find_run(self, out_path: str) -> RunRecord | None:
        """The run bound to a results path, if any."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(runs).where(runs.c.out_path == out_path))).first()
        return _run_record(row) if row else None

    async def get_run(self, run_id: int) -> RunRecord | None:
        """A run by id."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(runs).where(runs.c.id == run_id))).first()
        return _run_record(row) if row else None

    async def list_runs(self) -> list[RunRecord]:
        """Every run, newest first."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(runs).order_by(runs.c.id.desc()))).all()
        return [_run_record(r) for r in rows]

    async def create_run(
        self, out_path: str, input_path: str, digest: str, now: float, owner: str
    ) -> int:
        """Create an empty run in the ingesting state, owned by `owner`; return its id.

        Raises RunLockedError when another process created the same run a moment earlier."""
        values = dict(
            out_path=out_path,
            input_path=input_path,
            input_digest=digest,
            state="ingesting",
            created_at=now,
            updated_at=now,
            owner=owner,
            heartbeat_at=now,
        )
        try:
            async with self.engine.begin() as conn:
                result = await conn.execute(insert(runs).values(**values).returning(runs.c.id))
                return int(result.scalar_one())
        except IntegrityError:
            raise RunLockedError(
                f"another process started the run for {out_path} at the same moment"
            ) from None

    async def delete_run(self, run_id: int) -> None:
        """Remove a run and all of its jobs."""
        async with self.engine.begin() as conn:
            await conn.execute(delete(attempt_errors).where(attempt_errors.c.run_id == run_id))
            await conn.execute(delete(jobs).where(jobs.c.run_id == run_id))
            await conn.execute(delete(runs).where(runs.c.id == run_id))

    async def add_jobs(self, run_id: int, batch: Sequence[Job]) -> list[Duplicate]:
        """Insert jobs; report those whose custom_id the run already has (not inserted)."""
        if not batch:
            return []
        if self._job_insert is None:
            self._job_insert = dialect.job_insert_sql(self.engine.dialect)
        rows = [
            (run_id, j.line, j.custom_id, j.body, j.metadata, j.est_tokens, j.model) for j in batch
        ]
        async with self.engine.begin() as conn:
            result = await conn.exec_driver_sql(self._job_insert, rows)
            if result.rowcount == len(rows):
                return []
            return await self._duplicates(conn, run_id, batch)

    async def _duplicates(self, conn: Any, run_id: int, batch: Sequence[Job]) -> list[Duplicate]:
        ids = [j.custom_id for j in batch]
        query = select(jobs.c.custom_id, jobs.c.line).where(
            jobs.c.run_id == run_id, jobs.c.custom_id.in_(ids)
        )
        stored = {cid: line for cid, line in (await conn.execute(query)).all()}
        return [
            Duplicate(j.custom_id, j.line, stored[j.custom_id])
            for j in batch
            if stored.get(j.custom_id, j.line) != j.line
        ]

    async def mark_ingested(self, run_id: int, total_jobs: int, digest: str, now: float) -> None:
        """Declare the job list complete."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(state="ready", total_jobs=total_jobs, input_digest=digest, updated_at=now)
            )

    async def take_ownership(
        self, run_id: int, owner: str, expected: str | None, now: float
    ) -> bool:
        """Become the run's owner if its owner is still `expected` (compare and set)."""
        current = runs.c.owner.is_(None) if expected is None else runs.c.owner == expected
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(runs)
                .where(runs.c.id == run_id, current)
                .values(owner=owner, heartbeat_at=now, stop_reason=None, finished_at=None)
            )
            return bool(result.rowcount == 1)

    async def heartbeat(self, run_id: int, owner: str, now: float, limits_json: str | None) -> None:
        """Prove the owner is alive (and publish the limiter's state for `status`, if given)."""
        values: dict[str, object] = {"heartbeat_at": now}
        if limits_json is not None:
            values["limits_json"] = limits_json
        async with self.engine.begin() as conn:
            await conn.execute(
                update(runs).where(runs.c.id == run_id, runs.c.owner == owner).values(**values)
            )

    async def release(
        self, run_id: int, owner: str, now: float, active_s: float, stop_reason: str | None
    ) -> None:
        """Give up ownership, adding this process's active time and why it stopped."""
        finished = now if stop_reason is None else None
        async with self.engine.begin() as conn:
            await conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.owner == owner)
                .values(
                    owner=None,
                    heartbeat_at=None,
                    updated_at=now,
                    active_s=runs.c.active_s + active_s,
                    stop_reason=stop_reason,
                    finished_at=finished,
                )
            )

    async def requeue_running(self, run_id: int) -> int:
        """Put every leased job back in the queue (their process is gone); return how many."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(jobs)
                .where(jobs.c.run_id == run_id, jobs.c.state == "running")
                .values(state="pending", lease_owner=None, lease_expires_at=None)
            )
            return int(result.rowcount)

    async def claim(
        self, run_id: int, owner: str, limit: int, now: float, lease_s: float
    ) -> list[ClaimedJob]:
        """Lease up to `limit` jobs that are due: waiting retries first, then pending jobs."""
        values = dict(state="running", lease_owner=owner, lease_expires_at=now + lease_s)
        claimed: list[ClaimedJob] = []
        async with self.engine.begin() as conn:
            for state in ("retry", "pending"):
                want = limit - len(claimed)
                if want <= 0:
                    break
                stmt = dialect.claim_statement(self._dialect, run_id, state, want, now, values)
                rows = (await conn.execute(stmt)).all()
                claimed.extend(ClaimedJob(*row) for row in rows)
        claimed.sort(key=lambda job: job.id)
        return claimed

    async def record(
        self,
        run_id: int,
        owner: str,
        outcomes: Sequence[Outcome],
        now: float,
        watermark: tuple[int, int] | None,
    ) -> None:
        """Save attempt outcomes (and the exporter's watermark) in one transaction."""
        async with self.engine.begin() as conn:
            finals = [o for o in outcomes if o.state in FINAL_STATES]
            if finals:
                bump = (
                    update(runs)
                    .where(runs.c.id == run_id)
                    .values(next_seq=runs.c.next_seq + len(finals), updated_at=now)
                    .returning(runs.c.next_seq)
                )
                last = int((await conn.execute(bump)).scalar_one())
                first = last - len(finals) + 1
                params = statements.final_params(finals, first, owner, now)
                await conn.exec_driver_sql(self._final_update.sql, self._final_update.rows(params))
            retries = [o for o in outcomes if o.state not in FINAL_STATES]
            if retries:
                params = statements.requeue_params(retries, owner)
                requeue = self._requeue_update
                await conn.exec_driver_sql(requeue.sql, requeue.rows(params))
            errors = statements.error_rows(run_id, outcomes, now)
            if errors:
                await conn.execute(insert(attempt_errors), errors)
            if watermark is not None:
                await conn.execute(statements.watermark_update(run_id, *watermark))

    async def results_after(self, run_id: int, seq: int, limit: int) -> list[ResultRow]:
        """Final results with a sequence number above `seq`, in sequence order."""
        query = (
            select(*statements.RESULT_COLUMNS)
            .where(jobs.c.run_id == run_id, jobs.c.done_seq > seq)
            .order_by(jobs.c.done_seq)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [statements.result_row(row) for row in rows]

    async def set_watermark(self, run_id: int, seq: int, offset: int) -> None:
        """Record how far the results file reflects the database."""
        async with self.engine.begin() as conn:
            await conn.execute(statements.watermark_update(run_id, seq, offset))

    async def next_due(self, run_id: int) -> float | None:
        """When the earliest waiting retry is due, if any job waits."""
        query = select(func.min(jobs.c.next_attempt_at)).where(
            jobs.c.run_id == run_id, jobs.c.state == "retry"
        )
        async with self.engine.connect() as conn:
            value = (await conn.execute(query)).scalar()
        return float(value) if value is not None else None

    async def has_open_jobs(self, run_id: int) -> bool:
        """Whether any job is pending, waiting to retry or leased."""
        async with self.engine.connect() as conn:
            for state in OPEN_STATES:
                query = select(jobs.c.id).where(jobs.c.run_id == run_id, jobs.c.state == state)
                if (await conn.execute(query.limit(1))).first() is not None:
                    return True
        return False

    async def requeue_failed(self, run_id: int, only_code: str | None) -> list[int]:
        """Put failed jobs (optionally of one error code) back in the queue; return their ids."""
        where = [jobs.c.run_id == run_id, jobs.c.state == "failed"]
        if only_code is not None:
            where.append(jobs.c.error_code == only_code)
        fresh = dict(
            state="pending",
            attempts=0,
            next_attempt_at=0.0,
            status_code=None,
            request_id=None,
            response=None,
            error_code=None,
            error_message=None,
            done_seq=None,
            finished_at=None,
        )
        async with self.engine.begin() as conn:
            ids = list((await conn.execute(select(jobs.c.id).where(*where))).scalars())
            if ids:
                await conn.execute(update(jobs).where(*where).values(**fresh))
                await conn.execute(
                    update(runs)
                    .where(runs.c.id == run_id)
                    .values(export_seq=0, export_offset=0, finished_at=None, stop_reason=None)
                )
        return [int(i) for i in ids]

    async def rewrite_bodies(self, updates: Sequence[tuple[int, bytes]], model: str) -> None:
        """Replace the request bodies of the given job ids (now asking for `model`)."""
        if not updates:
            return
        stmt = (
            update(jobs)
            .where(jobs.c.id == bindparam("b_id"))
            .values(body=bindparam("b_body"), model=model)
        )
        async with self.engine.begin() as conn:
            await conn.execute(stmt, [dict(b_id=i, b_body=b) for i, b in updates])

    async def bodies(self, job_ids: Sequence[int]) -> list[tuple[int, bytes]]:
        """The request bodies of the given job ids."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(select(jobs.c.id, jobs.c.body).where(jobs.c.id.in_(job_ids)))
            ).all()
        return [(int(i), bytes(b)) for i, b in rows]

    async def results_in_order(
        self, run_id: int, order: str, after: int, limit: int
    ) -> list[ResultRow]:
        """Final results by finishing sequence or by input line, after a seq / job id."""
        key = jobs.c.done_seq if order == "finish" else jobs.c.id
        query = (
            select(*statements.RESULT_COLUMNS)
            .where(jobs.c.run_id == run_id, jobs.c.done_seq.is_not(None), key > after)
            .order_by(key)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [statements.result_row(row) for row in rows]

    async def sent_since(self, since: float) -> list[float]:
        """When requests that got an answer were sent, across all runs, since `since`."""
        finished = select(jobs.c.finished_at).where(
            jobs.c.finished_at > since, jobs.c.status_code.is_not(None)
        )
        refused = select(attempt_errors.c.at).where(
            attempt_errors.c.at > since, attempt_errors.c.status_code.is_not(None)
        )
        async with self.engine.connect() as conn:
            times = list((await conn.execute(finished)).scalars())
            times += (await conn.execute(refused)).scalars()
        return sorted(float(t) for t in times)

    async def counts(self, run_id: int) -> dict[str, int]:
        """Jobs per state."""
        query = (
            select(jobs.c.state, func.count()).where(jobs.c.run_id == run_id).group_by(jobs.c.state)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {state: int(n) for state, n in rows}

    async def usage(self, run_id: int) -> tuple[int, int]:
        """Prompt and completion tokens used by the run so far."""
        query = select(
            func.coalesce(func.sum(jobs.c.prompt_tokens), 0),
            func.coalesce(func.sum(jobs.c.completion_tokens), 0),
        ).where(jobs.c.run_id == run_id)
        async with self.engine.connect() as conn:
            prompt, completion = (await conn.execute(query)).one()
        return int(prompt), int(completion)

    async def usage_by_model(self, run_id: int) -> dict[str, tuple[int, int]]:
        """Prompt and completion tokens used so far, per model."""
        query = (
            select(
                jobs.c.model,
                func.coalesce(func.sum(jobs.c.prompt_tokens), 0),
                func.coalesce(func.sum(jobs.c.completion_tokens), 0),
            )
            .where(jobs.c.run_id == run_id)
            .group_by(jobs.c.model)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {str(m or ""): (int(p), int(c)) for m, p, c in rows if p or c}

    async def error_kinds(self, run_id: int) -> list[tuple[str, int, ErrorEntry]]:
        """Attempt errors grouped by code: (code, count, newest example), most frequent first."""
        t = attempt_errors
        grouped = (
            select(t.c.code, func.count(), func.max(t.c.id))
            .where(t.c.run_id == run_id)
            .group_by(t.c.code)
            .order_by(func.count().desc())
        )
        async with self.engine.connect() as conn:
            groups = (await conn.execute(grouped)).all()
            examples = select(t.c.id, t.c.at, t.c.status_code, t.c.code, t.c.message).where(
                t.c.id.in_([newest for _, _, newest in groups])
            )
            by_id = {row[0]: row[1:] for row in (await conn.execute(examples)).all()}
        return [
            (code, int(n), (float(by_id[i][0]), by_id[i][1], by_id[i][2], by_id[i][3]))
            for code, n, i in groups
        ]

    async def recent_errors(self, run_id: int, limit: int) -> list[ErrorEntry]:
        """The newest attempt errors: (at, status, code, message)."""
        t = attempt_errors
        query = (
            select(t.c.at, t.c.status_code, t.c.code, t.c.message)
            .where(t.c.run_id == run_id)
            .order_by(t.c.id.desc())
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(float(a), s, c, m) for a, s, c, m in rows]
