"""Draining a run's queue: claim jobs, pace them, send them, decide, record, export.

One task group per run. A dispatcher claims due jobs in small batches under a lease and hands
them to `concurrency` workers; each worker waits for the limiter, sends through the transport,
classifies the answer and passes the outcome to the single writer, which saves outcomes in
batched transactions and appends result lines to the results file. A finished answer is handed
to the writer under a shielded scope, so an interrupt never loses a paid-for result.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import orjson
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from runner.attempt import Attempt, StopRequest
from runner.clock import Clock
from runner.errors import ResultsWriteError
from runner.output import ResultsFile
from runner.progress import Progress, ProgressView
from runner.store.protocol import ClaimedJob, Outcome, RunRecord, Store
from runner.watch import Live, RunWatch
from runner.workqueue import WorkQueue

log = logging.getLogger("runner.engine")

HEARTBEAT_S = 5.0
WRITE_BATCH = 1024
# At most one commit per window: a short delay in recording buys one commit, one fsync and one
# export for hundreds of results instead of a handful. A write that itself took longer than the
# window is followed at once by the next.
WRITE_WINDOW_S = 0.05
# Claimed request bodies held in memory: enough for a write's worth of work at thousands of
# small jobs a second, while a file of 500 KB prompts keeps only a few dozen in memory.
QUEUED_BYTES = 16 * 2**20


@dataclass(frozen=True)
class EngineConfig:
    """How hard and how long to work on a run."""

    concurrency: int = 16
    claim_batch: int = 1024
    lease_s: float = 600.0
    grace_s: float = 30.0


@dataclass
class RunStats:
    """What one invocation did."""

    sent: int = 0
    done: int = 0
    failed: int = 0
    retried: int = 0
    rate_limited: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    lines_written: int = 0
    elapsed_s: float = 0.0
    stop: StopRequest | None = None
    errors_by_code: dict[str, int] = field(default_factory=dict)
    cache_hits: int = 0
    cache_misses: int = 0
    tokens_saved: int = 0
    cost_saved: float | None = None


class Engine:
    """Runs one run to completion or to a clean stop."""

    def __init__(
        self,
        store: Store,
        run: RunRecord,
        attempt: Attempt,
        results_path: Path,
        config: EngineConfig,
        clock: Clock,
        watch: RunWatch,
        owner: str,
        view: ProgressView | None = None,
    ) -> None:
        self.store = store
        self.watch = watch
        self.view = view
        self.run = run
        self.attempt = attempt
        self.config = config
        self.clock = clock
        self.owner = owner
        self.stats = RunStats()
        self.results = ResultsFile(results_path, store, run.id)
        self._outstanding = 0
        self._changed = anyio.Event()
        self._senders: anyio.CancelScope | None = None
        self._rng = random.Random()
        self._started = clock.monotonic()
        self._models: dict[int, str] = {}
        self._requeued = 0
        # Claimed jobs without an outcome yet (what the dispatcher tops up), and their body
        # bytes; `_outstanding` also counts outcomes the writer has not recorded (what
        # "all done" waits for).
        self._queued = 0
        self._queued_bytes = 0
        # The dispatcher tops the queue up below this mark: a claim waits behind the writer's
        # transaction (SQLite has one writer), so the queue must outlast one write.
        self._low_water = max(config.concurrency * 2, 512)

    async def execute(self) -> RunStats:
        """Drain the run (already owned by `owner`); return what happened."""
        log.info("run %d: working on %s (owner %s)", self.run.id, self.run.input_path, self.owner)
        started = self._started = self.clock.monotonic()
        try:
            await self.store.requeue_running(self.run.id)
            self.results.open(self.run.export_seq, self.run.export_offset)
            await self.results.export()
            # A run already at a cap (an earlier invocation reached it) sends nothing more.
            over_budget = self.watch.over_budget()
            if over_budget is not None:
                self.request_stop(over_budget)
            await self._pipeline()
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish(started)
        return self.stats

    async def _finish(self, started: float) -> None:
        self.stats.elapsed_s = self.clock.monotonic() - started
        stop = self.stats.stop
        reason = None if stop is None else stop.reason
        try:
            await self.store.requeue_running(self.run.id)
            if self.results.is_open:
                seq, offset = await self.results.export()
                await self.store.set_watermark(self.run.id, seq, offset)
            self.stats.lines_written = self.results.lines_written
            await self.store.heartbeat(self.run.id, self.owner, self.clock.time(), self._snapshot())
        except OSError as exc:
            # Everything is in the database; the file catches up on the next run.
            reason = f"cannot write {self.results.path}: {exc.strerror or exc}"
            raise ResultsWriteError(f"{reason}; free the space or fix it and run again") from None
        finally:
            self.results.close()
            await self.store.release(
                self.run.id, self.owner, self.clock.time(), self.stats.elapsed_s, reason
            )
        log.info(
            "run %d: %d done, %d failed, %d retried in %.1fs%s",
            self.run.id,
            self.stats.done,
            self.stats.failed,
            self.stats.retried,
            self.stats.elapsed_s,
            f"; stopped: {reason}" if reason else "",
        )

    async def _pipeline(self) -> None:
        jobs = WorkQueue[ClaimedJob]()
        out_send, out_recv = anyio.create_memory_object_stream[Outcome](WRITE_BATCH)
        async with anyio.create_task_group() as services:
            services.start_soon(self._heartbeat)
            services.start_soon(self._watch_signals)
            services.start_soon(self._report)
            async with anyio.create_task_group() as pipeline:
                pipeline.start_soon(self._writer, out_recv)
                async with anyio.create_task_group() as senders:
                    self._senders = senders.cancel_scope
                    senders.start_soon(self._dispatch, jobs)
                    for _ in range(self.config.concurrency):
                        senders.start_soon(self._work, jobs, out_send)
                out_send.close()
            services.cancel_scope.cancel()

    # -- dispatch -------------------------------------------------------------------------

    def request_stop(self, stop: StopRequest) -> None:
        """Stop dispatching; in-flight requests finish. The first reason given is kept."""
        if self.stats.stop is None:
            self.stats.stop = stop
            log.warning("stopping: %s", stop.reason)
        self.attempt.stop_waiting()
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _dispatch(self, jobs: WorkQueue[ClaimedJob]) -> None:
        # Claim in batches: top the queue up once it falls below the low-water mark, so a
        # claim is one transaction for many jobs rather than one for each freed slot.
        body_bytes = 1024.0  # a running average of claimed bodies, to size claims in bytes
        try:
            while self.stats.stop is None:
                want = self._claim_size(body_bytes)
                if want == 0:
                    await self._idle(check_due=False)
                    continue
                # Shielded like every write: a cancelled claim would leave its transaction open.
                with anyio.CancelScope(shield=True):
                    claimed = await self.store.claim(
                        self.run.id, self.owner, want, self.clock.time(), self.config.lease_s
                    )
                if claimed:
                    size = sum(len(job.body) for job in claimed)
                    body_bytes = 0.5 * body_bytes + 0.5 * size / len(claimed)
                    self._outstanding += len(claimed)
                    self._queued += len(claimed)
                    self._queued_bytes += size
                    for job in claimed:
                        self._models[job.id] = job.model
                        self._requeued += job.attempts > 0
                    jobs.put_many(claimed)
                    continue
                if self._outstanding == 0 and not await self.store.has_open_jobs(self.run.id):
                    return
                await self._idle(check_due=True)
        finally:
            jobs.close()

    def _claim_size(self, body_bytes: float) -> int:
        """How many jobs to claim now: none while the queue is above its low-water mark."""
        if self._queued >= self._low_water or self._queued_bytes >= QUEUED_BYTES:
            return 0
        by_bytes = int((QUEUED_BYTES - self._queued_bytes) / max(body_bytes, 1.0))
        # Always at least one job per worker's worth of progress, however big the bodies.
        return max(1, min(self._low_water + self.config.claim_batch - self._queued, by_bytes))

    async def _idle(self, check_due: bool) -> None:
        changed = self._changed
        wait = 0.5
        if check_due:
            due = await self.store.next_due(self.run.id)
            if due is not None:
                wait = min(wait, max(0.005, due - self.clock.time()))
        with anyio.move_on_after(wait):
            await changed.wait()

    # -- workers --------------------------------------------------------------------------

    async def _work(
        self, jobs: WorkQueue[ClaimedJob], outcomes: MemoryObjectSendStream[Outcome]
    ) -> None:
        while (job := await jobs.get()) is not None:
            if self.stats.stop is not None:
                outcome = Outcome(job.id, "pending")
            else:
                outcome, stop = await self.attempt.run(job, self._rng.random())
                # Caps count each answer as it arrives, not when the writer records it: what
                # is sent past a cap is then only what was already in flight.
                over_budget = self.watch.record((outcome,), self._models)
                stop = stop or over_budget
                if stop is not None:
                    self.request_stop(stop)
                _log_transition(job, outcome)
            self._queued -= 1
            self._queued_bytes -= len(job.body)
            if self._queued == self._low_water - 1:
                self._wake()  # just fell below the dispatcher's low-water mark
            try:
                # Usually there is room: no await, so nothing can cancel the hand-over.
                outcomes.send_nowait(outcome)
            except anyio.WouldBlock:
                with anyio.CancelScope(shield=True):
                    await outcomes.send(outcome)

    # -- writer ---------------------------------------------------------------------------

    async def _writer(self, outcomes: MemoryObjectReceiveStream[Outcome]) -> None:
        watermark: tuple[int, int] | None = None
        started = -WRITE_WINDOW_S
        async with outcomes:
            async for first in outcomes:
                batch = await _gather(first, outcomes, started + WRITE_WINDOW_S)
                started = anyio.current_time()
                with anyio.CancelScope(shield=True):
                    await self.store.record(
                        self.run.id, self.owner, batch, self.clock.time(), watermark
                    )
                    self._count(batch)
                    self._outstanding -= len(batch)
                    watermark = await self.results.export()
                for outcome in batch:
                    self._models.pop(outcome.job_id, None)
                self._wake()

    def _count(self, batch: list[Outcome]) -> None:
        stats = self.stats
        for o in batch:
            stats.prompt_tokens += o.prompt_tokens
            stats.completion_tokens += o.completion_tokens
            if o.state == "done":
                stats.done += 1
            elif o.state == "failed":
                stats.failed += 1
            elif o.state == "retry":
                stats.retried += 1
            if o.error_code and o.state != "pending":
                stats.errors_by_code[o.error_code] = stats.errors_by_code.get(o.error_code, 0) + 1

    # -- services -------------------------------------------------------------------------

    def _snapshot(self) -> str:
        """The limiter's state plus throughput so far, as JSON for `runner status`."""
        snapshot = self.attempt.limiter.snapshot()
        snapshot["at"] = self.clock.time()
        minutes = max(1e-9, (self.clock.monotonic() - self._started) / 60.0)
        stats = self.stats
        snapshot["stats"] = {
            "sent": self.attempt.sent,
            "done": stats.done,
            "failed": stats.failed,
            "retried": stats.retried,
            "requests_per_min": self.attempt.sent / minutes,
            "tokens_per_min": (stats.prompt_tokens + stats.completion_tokens) / minutes,
        }
        return orjson.dumps(snapshot, default=_json_default).decode()

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(HEARTBEAT_S)
            with anyio.CancelScope(shield=True):
                await self.store.heartbeat(
                    self.run.id, self.owner, self.clock.time(), self._snapshot()
                )

    def progress(self) -> Progress:
        """Where the run stands now."""
        snapshot = self.attempt.limiter.snapshot()
        paused = snapshot.get("paused_reason")
        if paused:
            until = self.clock.time() + float(str(snapshot.get("paused_for_s") or 0))
            paused = f"{paused} until {time.strftime('%H:%M:%S', time.localtime(until))}"
        stats = self.stats
        live = Live(
            done=stats.done,
            failed=stats.failed,
            retried=stats.retried,
            requeued=self._requeued,
            in_flight=self.attempt.in_flight,
            queued=max(0, self._queued - self.attempt.in_flight),
            sent=self.attempt.sent,
            rate_limited=self.attempt.rate_limited,
            elapsed_s=self.clock.monotonic() - self._started,
            paused=str(paused) if paused else None,
            stopping=stats.stop.reason if stats.stop else None,
        )
        return self.watch.progress(live)

    async def _report(self) -> None:
        interval = self.view.interval_s if self.view is not None else 1.0
        shown = self.clock.monotonic()
        try:
            while True:
                # --max-runtime is checked every second whatever the display's interval.
                await anyio.sleep(min(interval, 1.0))
                now = self.clock.monotonic()
                stop = self.watch.over_runtime(now - self._started)
                if stop is not None:
                    self.request_stop(stop)
                if self.view is not None and now - shown >= interval - 0.01:
                    shown = now
                    self.view.show(self.progress())
        finally:
            if self.view is not None:
                self.view.show(self.progress())
                self.view.close()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            count = 0
            async for signum in signals:
                count += 1
                name = signal.Signals(signum).name
                if count == 1:
                    self.request_stop(StopRequest("interrupted", f"interrupted by {name}"))
                    self._start_grace()
                elif self._senders is not None:
                    log.warning("second %s: cancelling in-flight requests", name)
                    self._senders.cancel()

    def _start_grace(self) -> None:
        if self._senders is not None:
            self._senders.deadline = min(
                self._senders.deadline, anyio.current_time() + self.config.grace_s
            )


async def _gather(
    first: Outcome, outcomes: MemoryObjectReceiveStream[Outcome], until: float
) -> list[Outcome]:
    """`first` and whatever else arrives until `until`: one transaction for many.

    The window is a sleep followed by non-blocking receives, never a cancelled receive, so
    no outcome can be dropped between the stream and the batch.
    """
    batch = [first]
    _drain(outcomes, batch)
    wait = until - anyio.current_time()
    if len(batch) < WRITE_BATCH and wait > 0:
        await anyio.sleep(wait)
        _drain(outcomes, batch)
    return batch


def _drain(outcomes: MemoryObjectReceiveStream[Outcome], batch: list[Outcome]) -> None:
    while len(batch) < WRITE_BATCH:
        try:
            batch.append(outcomes.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            return


def _log_transition(job: ClaimedJob, outcome: Outcome) -> None:
    if not log.isEnabledFor(logging.DEBUG):
        return
    detail = ""
    if outcome.error_code:
        detail = f" (HTTP {outcome.status_code}, {outcome.error_code}: {outcome.error_message})"
    log.debug("job %s attempt %d -> %s%s", job.custom_id, job.attempts + 1, outcome.state, detail)


def _json_default(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(type(value).__name__)
