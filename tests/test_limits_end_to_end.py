"""Limits and quotas as a run meets them: budgets, quota stops, huge waits, bad 200s."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from runner.app import exit_code
from tests.support import batch_line, chat_body, emulator, read_results, run

pytestmark = pytest.mark.anyio


async def test_request_over_token_budget_fails_fast_and_the_rest_completes(
    tmp_path: Path, write_jobs: Callable[..., Path]
) -> None:
    """A 1,000-token request against a 500-token budget fails unsent, with a reason."""
    jobs = write_jobs(
        [
            batch_line("small-1", chat_body("short", max_tokens=50)),
            batch_line("huge", chat_body("too big", max_tokens=1000)),
            batch_line("small-2", chat_body("short too", max_tokens=50)),
        ]
    )
    async with emulator() as (emu, target):
        report = await run(jobs, target, tmp_path, tpm=500)
    by_id = {line["custom_id"]: line for line in read_results(Path(report.run.out_path))}
    assert by_id["huge"]["error"]["code"] == "exceeds_token_budget"
    assert "token budget is 500" in by_id["huge"]["error"]["message"]
    assert by_id["huge"]["response"] is None
    assert by_id["small-1"]["error"] is None and by_id["small-2"]["error"] is None
    assert emu.stats.requests == 2
    assert exit_code(report) == 1


async def test_learned_token_limit_fails_a_request_that_can_never_fit(
    tmp_path: Path, write_jobs: Callable[..., Path]
) -> None:
    """Once headers say the token budget is 500, a 1,000-token request fails; the run ends."""
    jobs = write_jobs(
        [batch_line(f"s{i}", chat_body("short", max_tokens=20)) for i in range(3)]
        + [batch_line("huge", chat_body("too big", max_tokens=1000))]
    )
    async with emulator(dialect="openai", limit_tokens=500, window_s=60) as (_, target):
        report = await run(jobs, target, tmp_path, concurrency=1)
    by_id = {line["custom_id"]: line for line in read_results(Path(report.run.out_path))}
    assert by_id["huge"]["error"]["code"] == "exceeds_token_budget"
    assert report.counts == {"done": 3, "failed": 1}


async def test_insufficient_quota_stops_after_one_request_and_a_rerun_finishes(
    tmp_path: Path, write_jobs: Callable[..., Path]
) -> None:
    """An insufficient_quota 429 ends the run with exit 3 after one request; later it resumes."""
    jobs = write_jobs(
        [batch_line("first", chat_body("[emulate status=quota,200] hello"))]
        + [batch_line(f"rest-{i}", chat_body(f"job {i}")) for i in range(9)]
    )
    async with emulator() as (emu, target):
        stopped = await run(jobs, target, tmp_path, concurrency=1)
        assert exit_code(stopped) == 3
        assert stopped.stats.stop is not None and stopped.stats.stop.kind == "quota"
        assert emu.stats.requests == 1
        assert stopped.counts == {"pending": 10}
        assert not read_results(Path(stopped.run.out_path))
        finished = await run(jobs, target, tmp_path, concurrency=1)
    assert exit_code(finished) == 0
    assert finished.counts == {"done": 10}
    assert len(read_results(Path(finished.run.out_path))) == 10


async def test_huge_retry_after_is_a_quota_stop_not_a_three_day_sleep(
    tmp_path: Path, write_jobs: Callable[..., Path]
) -> None:
    """`retry-after: 277403` stops the run (exit 3) at once instead of sleeping."""
    jobs = write_jobs(
        [batch_line("a", chat_body("[emulate status=429 retry_after=277403] x"))]
        + [batch_line(f"b{i}", chat_body(f"y {i}")) for i in range(5)]
    )
    async with emulator() as (emu, target):
        report = await run(jobs, target, tmp_path, concurrency=1)
    assert exit_code(report) == 3
    assert report.stats.stop is not None and report.stats.stop.kind == "quota"
    assert report.stats.stop.resume_after_s == pytest.approx(277403, abs=1)
    assert report.stats.elapsed_s < 30
    assert emu.stats.requests == 1


async def test_200_with_error_body_is_a_failure_never_a_result(
    tmp_path: Path, write_jobs: Callable[..., Path]
) -> None:
    """A 200 carrying an error object is retried by its inner code, then fails with it."""
    jobs = write_jobs([batch_line("bad200", chat_body("[emulate error200] x"))])
    async with emulator() as (emu, target):
        report = await run(jobs, target, tmp_path, max_retries=1)
    (line,) = read_results(Path(report.run.out_path))
    assert line["error"]["code"] == "server_error"
    assert emu.stats.requests == 2
    assert report.counts == {"failed": 1}


async def test_scripted_429_is_waited_out_and_the_job_succeeds(
    tmp_path: Path, write_jobs: Callable[..., Path]
) -> None:
    """A short 429 is a rate limit: wait Retry-After, send again, succeed."""
    jobs = write_jobs(
        [batch_line("limited", chat_body("[emulate status=429,200 retry_after=1] x"))]
    )
    async with emulator() as (emu, target):
        report = await run(jobs, target, tmp_path)
    assert report.counts == {"done": 1}
    assert emu.stats.by_status == {429: 1, 200: 1}
    assert report.stats.rate_limited == 1


async def test_daily_cap_stops_the_run_and_counts_sends_of_earlier_runs(
    tmp_path: Path, write_jobs: Callable[..., Path]
) -> None:
    """--rpd 5: five requests go, the run stops (exit 3); a re-run the same day sends none."""
    jobs = write_jobs([batch_line(f"j{i}", chat_body(f"job {i}")) for i in range(8)])
    async with emulator() as (emu, target):
        first = await run(jobs, target, tmp_path, rpd=5, concurrency=2)
        again = await run(jobs, target, tmp_path, rpd=5, concurrency=2)
    assert emu.stats.requests == 5
    assert exit_code(first) == 3 and exit_code(again) == 3
    assert first.stats.stop is not None
    assert "daily request cap (--rpd 5)" in first.stats.stop.reason
    assert first.counts == {"done": 5, "pending": 3}
    assert again.stats.sent == 0


async def test_run_started_into_a_full_window_waits_instead_of_collecting_429s(
    tmp_path: Path, write_jobs: Callable[..., Path]
) -> None:
    """Right after another run filled the window, a new run follows the server's count.

    Regression: the second run trusted the window to be empty once a reset time passed and
    got more 429s than successes (249 sent for 101 jobs).
    """
    first = write_jobs([batch_line(f"a{i}", chat_body(f"a {i}")) for i in range(30)], "a.jsonl")
    second = write_jobs([batch_line(f"b{i}", chat_body(f"b {i}")) for i in range(30)], "b.jsonl")
    async with emulator(limit_requests=20, window_s=3.0) as (emu, target):
        await run(first, target, tmp_path, concurrency=8)
        before = emu.stats.requests
        report = await run(second, target, tmp_path, concurrency=8)
    assert report.counts == {"done": 30}
    sent = emu.stats.requests - before
    assert report.stats.rate_limited <= 2, (sent, report.stats.rate_limited)


async def test_window_is_learned_even_when_a_run_starts_into_a_nearly_full_window(
    tmp_path: Path, write_jobs: Callable[..., Path]
) -> None:
    """Regression: starting right after another run, only short resets were seen and a
    10 s window was learned as 0.5 s ("limit 30 per 0.5s, pacing at 3495/min"); here 4 s."""
    first = write_jobs([batch_line(f"a{i}", chat_body(f"a {i}")) for i in range(12)], "a.jsonl")
    second = write_jobs([batch_line(f"b{i}", chat_body(f"b {i}")) for i in range(16)], "b.jsonl")
    async with emulator(limit_requests=12, window_s=4.0) as (_, target):
        await run(first, target, tmp_path, concurrency=4)
        report = await run(second, target, tmp_path, concurrency=4)
    limits = orjson.loads(report.run.limits_json or "{}")
    assert limits["requests"]["limit"] == 12
    assert limits["requests"]["window_s"] >= 3.5
