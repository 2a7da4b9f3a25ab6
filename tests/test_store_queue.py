"""The queue's hot path (insert, claim, record, export) on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runner.jobfile import Job
from runner.store.connect import open_store
from runner.store.protocol import Outcome
from runner.store.sql import SqlStore
from tests.support import fresh_postgres_database

pytestmark = pytest.mark.anyio
OWNER = "worker-1"


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStore]:
    if request.param == "sqlite":
        async with open_store(str(tmp_path / "queue.db")) as opened:
            yield opened
        return
    async with fresh_postgres_database("runner_queue") as url, open_store(url) as opened:
        yield opened


async def queued_run(store: SqlStore, count: int) -> int:
    run_id = await store.create_run("/out.jsonl", "/in.jsonl", "d", 0.0, OWNER)
    jobs = [
        Job(i + 1, f"c{i}", b'{"n":%d}' % i, b'{"m":1}' if i == 0 else None, 5, "m")
        for i in range(count)
    ]
    assert await store.add_jobs(run_id, jobs) == []
    await store.mark_ingested(run_id, count, "d", 0.0)
    return run_id


async def test_outcomes_are_recorded_exported_in_order_and_retries_come_back(
    store: SqlStore,
) -> None:
    run_id = await queued_run(store, 4)
    claimed = await store.claim(run_id, OWNER, 10, 100.0, 600.0)
    assert [job.custom_id for job in claimed] == ["c0", "c1", "c2", "c3"]
    assert claimed[1].body == b'{"n":1}'
    outcomes = [
        Outcome(claimed[2].id, "done", 200, "req-2", b'{"r":2}', prompt_tokens=3),
        Outcome(claimed[0].id, "failed", 400, None, b'{"e":1}', "bad", "no good"),
        Outcome(claimed[1].id, "retry", 500, None, None, "http_500", "boom", retry_at=50.0),
        Outcome(claimed[3].id, "pending"),
    ]
    await store.record(run_id, OWNER, outcomes, 101.0, (0, 0))

    rows = await store.results_after(run_id, 0, 10)
    assert [(r.seq, r.custom_id, r.state) for r in rows] == [(1, "c2", "done"), (2, "c0", "failed")]
    assert (rows[0].status_code, rows[0].request_id, rows[0].response) == (200, "req-2", b'{"r":2}')
    assert (rows[1].error_code, rows[1].error_message, rows[1].metadata) == (
        "bad",
        "no good",
        b'{"m":1}',
    )
    assert await store.usage(run_id) == (3, 0)
    assert await store.counts(run_id) == {"done": 1, "failed": 1, "retry": 1, "pending": 1}

    again = await store.claim(run_id, OWNER, 10, 100.0, 600.0)
    # The retry is due (retry_at 50 <= now 100) and comes first; it has spent one attempt,
    # the job handed back unsent has spent none.
    assert [(job.custom_id, job.attempts) for job in again] == [("c1", 1), ("c3", 0)]


async def test_an_outcome_for_a_lease_another_owner_holds_is_not_recorded(
    store: SqlStore,
) -> None:
    run_id = await queued_run(store, 1)
    (job,) = await store.claim(run_id, OWNER, 1, 0.0, 600.0)
    await store.record(
        run_id, "someone-else", [Outcome(job.id, "done", 200, None, b"{}")], 1.0, None
    )
    assert await store.results_after(run_id, 0, 10) == []
    assert await store.counts(run_id) == {"running": 1}


async def test_an_empty_batch_inserts_nothing(store: SqlStore) -> None:
    # A batch of nothing but bad lines reaches the store empty (this once ended in exit 70).
    run_id = await queued_run(store, 1)
    assert await store.add_jobs(run_id, []) == []
    assert await store.counts(run_id) == {"pending": 1}
