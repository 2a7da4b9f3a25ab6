"""Managing finished or stopped runs: retry failures, export results, cancel what is left."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from runner.attempt import StopRequest
from runner.clock import Clock
from runner.errors import RunLockedError
from runner.output import ResultsFile, result_line
from runner.ownership import describe_owner, owner_id, owner_is_gone, take_run
from runner.store.protocol import Outcome, RunRecord, Store

EXPORT_BATCH = 5000
CANCEL_BATCH = 1000


def ensure_idle(run: RunRecord, now: float) -> None:
    """Refuse to change a run that a live process is working on."""
    if run.owner and not owner_is_gone(run.owner, run.heartbeat_at, now):
        raise RunLockedError(
            f"run {run.id} is being worked on by {describe_owner(run.owner)}; stop it first "
            "(Ctrl-C, or kill -TERM that process) and try again"
        )


async def retry_failed(
    store: Store, run: RunRecord, only_code: str | None, model: str | None, now: float
) -> int:
    """Re-queue failed jobs (optionally one error code, optionally with another model)."""
    ensure_idle(run, now)
    ids = await store.requeue_failed(run.id, only_code)
    if model is not None:
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            rewritten = []
            for job_id, body in await store.bodies(chunk):
                parsed = orjson.loads(body)
                parsed["model"] = model
                rewritten.append((job_id, orjson.dumps(parsed)))
            await store.rewrite_bodies(rewritten, model)
    return len(ids)


async def export(store: Store, run: RunRecord, out: Path, order: str) -> int:
    """Write every finished job's result line to `out`, atomically; return the line count."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    written, after = 0, 0
    with tmp.open("wb") as fh:
        while rows := await store.results_in_order(run.id, order, after, EXPORT_BATCH):
            fh.write(b"".join(result_line(row) for row in rows))
            written += len(rows)
            after = rows[-1].seq if order == "finish" else rows[-1].job_id
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(out)
    return written


async def cancel(store: Store, run: RunRecord, clock: Clock) -> int:
    """Fail every job not yet finished with code `cancelled`, so each gets its result line."""
    owner = owner_id()
    await take_run(store, run, owner, clock.time())
    cancelled = 0
    results = ResultsFile(Path(run.out_path), store, run.id)
    try:
        await store.requeue_running(run.id)
        results.open(run.export_seq, run.export_offset)
        await results.export()
        while claimed := await store.claim(run.id, owner, CANCEL_BATCH, float("inf"), 60.0):
            outcomes = [
                Outcome(
                    job.id,
                    "failed",
                    error_code="cancelled",
                    error_message="cancelled by `runner cancel` before it was sent",
                )
                for job in claimed
            ]
            await store.record(run.id, owner, outcomes, clock.time(), None)
            cancelled += len(claimed)
        seq, offset = await results.export()
        await store.set_watermark(run.id, seq, offset)
    finally:
        results.close()
        stop = StopRequest("cancelled", "cancelled")
        await store.release(run.id, owner, clock.time(), 0.0, stop.reason)
    return cancelled
