"""Composing one run: database, input, provider (or emulator), limiter and engine."""

from __future__ import annotations

import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import anyio

from runner.attempt import Attempt
from runner.cache.policy import CacheMode
from runner.cache.store import open_cache
from runner.cache.use import CacheUse
from runner.client import ClientConfig
from runner.clock import Clock
from runner.config import Environment, RunOptions
from runner.engine import Engine, EngineConfig, RunStats
from runner.errors import Interrupted, UsageError
from runner.http11 import Http11Transport
from runner.ingest import IngestResult, prepare_run
from runner.limits import DAY_S, AdaptiveLimiter, LimitConfig
from runner.ownership import owner_id
from runner.pricing import PriceTable
from runner.progress import LogLineView, ProgressView
from runner.retry import RetryPolicy
from runner.store.connect import open_store
from runner.store.protocol import OPEN_STATES, RunRecord, Store
from runner.store.sql import SqlStore
from runner.watch import Baseline, Caps, RunWatch

MOCK_KEY = "mock-key"


@dataclass(frozen=True)
class ApiTarget:
    """Where requests go and with which key."""

    base_url: str
    api_key: str
    mock: bool


@dataclass(frozen=True)
class RunReport:
    """What a run invocation did and where things stand now."""

    run: RunRecord
    resumed: bool
    stats: RunStats
    counts: dict[str, int]
    prompt_tokens: int
    completion_tokens: int
    cost: float | None = None


@asynccontextmanager
async def api_target(env: Environment, mock: bool) -> AsyncIterator[ApiTarget]:
    """The real API (key required), or the built-in emulator served on a loopback port."""
    if not mock:
        yield ApiTarget(env.require_base_url(), env.require_key(), mock=False)
        return
    from runner.emulator import EmulatorConfig, serve_emulator  # only runs with --mock need it

    # A modest limit, so a mock run shows the limiter learning from Selam-style headers.
    emulator = EmulatorConfig(limit_requests=1200, window_s=60.0, latency_ms=20.0)
    async with serve_emulator(emulator) as (_, base_url):
        yield ApiTarget(base_url, MOCK_KEY, mock=True)


async def run_job(options: RunOptions, target: ApiTarget, clock: Clock) -> RunReport:
    """Queue (or resume) the input and drain it; return the report."""
    _check_results_writable(options.out_path)
    owner = owner_id()
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_store(options.db))
        prepared = await _queue(store, options, clock, owner)
        try:
            engine, attempt, cache, watch = await _assemble(
                stack, store, prepared.run, options, target, clock, owner
            )
        except BaseException:
            # Nothing was sent: hand the run back so the next invocation is not kept out.
            with anyio.CancelScope(shield=True):
                await store.release(prepared.run.id, owner, clock.time(), 0.0, "not started")
            raise
        stats = await engine.execute()
        stats.sent = attempt.sent
        stats.rate_limited = attempt.rate_limited
        if cache is not None:
            stats.cache_hits, stats.cache_misses = cache.hits, cache.misses
            stats.tokens_saved = cache.tokens_saved
            stats.cost_saved = watch.prices.cost(cache.saved)
        run = await store.get_run(prepared.run.id)
        assert run is not None
        prompt, completion = await store.usage(run.id)
        counts = await store.counts(run.id)
        return RunReport(run, prepared.resumed, stats, counts, prompt, completion, watch.cost())


async def _queue(store: SqlStore, options: RunOptions, clock: Clock, owner: str) -> IngestResult:
    """prepare_run, given up cleanly on SIGINT or SIGTERM: nothing is left half-queued."""
    caught: list[str] = []
    failure: Exception | None = None
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                async for signum in signals:
                    caught.append(signal.Signals(signum).name)
                    tg.cancel_scope.cancel()
                    return

            tg.start_soon(watch)
            try:
                prepared = await prepare_run(
                    store,
                    options.input_path,
                    options.out_path,
                    restart=options.restart,
                    clock=clock,
                    max_line_bytes=options.max_line_bytes,
                    owner=owner,
                )
            except Exception as exc:
                # Raised below, outside the task group, which would wrap it in a group.
                failure = exc
            tg.cancel_scope.cancel()
    if caught:
        raise Interrupted(
            f"interrupted by {caught[0]} while queueing {options.input_path}; nothing was "
            "sent. Run the same command again."
        )
    if failure is not None:
        raise failure
    return prepared


async def _assemble(
    stack: AsyncExitStack,
    store: SqlStore,
    run: RunRecord,
    options: RunOptions,
    target: ApiTarget,
    clock: Clock,
    owner: str,
) -> tuple[Engine, Attempt, CacheUse | None, RunWatch]:
    client = ClientConfig(
        base_url=target.base_url,
        api_key=target.api_key,
        timeout_s=options.timeout_s,
        max_connections=options.concurrency,
    )
    transport = await stack.enter_async_context(Http11Transport(client))
    limits = LimitConfig(
        rpm=options.rpm, tpm=options.tpm, rpd=options.rpd, max_wait_s=options.max_wait_s
    )
    limiter = AdaptiveLimiter(limits, clock)
    if options.rpd is not None:
        limiter.seed_sends(await store.sent_since(clock.time() - DAY_S))
    # The emulator's answers are not the provider's: they are neither served from the shared
    # cache nor stored in it.
    cache = None if target.mock else await _open_cache(stack, options, store)
    attempt = Attempt(
        transport,
        limiter,
        RetryPolicy(max_retries=options.max_retries),
        clock,
        max_wait_s=options.max_wait_s,
        secrets=(target.api_key,),
        cache=cache,
    )
    watch = RunWatch(
        Caps(options.max_tokens, options.max_cost, options.max_runtime_s),
        PriceTable.load(options.prices_path, options.price_overrides),
        await _baseline(store, run),
    )
    engine = Engine(
        store,
        run,
        attempt,
        options.out_path,
        EngineConfig(concurrency=options.concurrency),
        clock,
        watch,
        owner,
        progress_view(options.progress, options.progress_interval_s),
    )
    return engine, attempt, cache, watch


def _check_results_writable(path: Path) -> None:
    """Fail before anything is queued or sent if the results file cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        with path.open("ab"):
            pass
        if not existed:
            path.unlink()  # created only to prove it can be; the run creates it for real
    except OSError as exc:
        raise UsageError(f"cannot write the results file {path}: {exc.strerror or exc}") from None


async def _open_cache(
    stack: AsyncExitStack, options: RunOptions, store: SqlStore
) -> CacheUse | None:
    if options.cache_mode == "off":
        return None
    # The run database has one connection shared with the writer, so allow it a longer wait
    # before the guard decides the cache is broken; a Redis server answers fast or not at all.
    timeout_s = 1.0 if options.cache_url else 10.0
    try:
        cache = open_cache(options.cache_url, store.engine, timeout_s=timeout_s)
    except ValueError as exc:
        raise UsageError(f"--cache-url: {exc}") from None
    stack.push_async_callback(cache.close)
    mode = cast(CacheMode, options.cache_mode)
    return CacheUse(cache, mode, options.cache_ttl_s)


async def _baseline(store: Store, run: RunRecord) -> Baseline:
    counts = await store.counts(run.id)
    return Baseline(
        total=sum(counts.values()),
        done=counts.get("done", 0),
        failed=counts.get("failed", 0),
        retrying=counts.get("retry", 0),
        usage=await store.usage_by_model(run.id),
    )


def progress_view(mode: str, interval_s: float) -> ProgressView | None:
    """Live on a terminal, plain lines elsewhere (cron, pipes), or nothing."""
    if mode == "auto":
        mode = "live" if sys.stderr.isatty() else "plain"
    if mode == "live":
        from runner.liveview import LiveView  # rich, which only a terminal needs

        return LiveView()
    if mode == "plain":
        return LogLineView(interval_s)
    return None


def exit_code(report: RunReport) -> int:
    """0 all done; 1 some failed for good; 3 stopped early (resumable); 4 key refused."""
    stop = report.stats.stop
    if stop is not None and stop.kind == "auth":
        return 4
    if stop is not None or any(report.counts.get(s, 0) for s in OPEN_STATES):
        return 3
    return 1 if report.counts.get("failed", 0) else 0
