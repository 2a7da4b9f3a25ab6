"""AdaptiveLimiter and Budget on a FakeClock: virtual time jumps, nothing really sleeps."""

from __future__ import annotations

import bisect
from typing import Any

import anyio
import pytest

from runner.clock import FakeClock
from runner.limits import (
    AdaptiveLimiter,
    Budget,
    LimitConfig,
    Permit,
    TokensNeverFit,
    WaitTooLong,
)
from runner.ratelimit_headers import Quota, RateLimitInfo

STALL_LIMIT = 1000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class WatchedClock(FakeClock):
    """FakeClock that fails the test when sleeps stop moving virtual time (a livelock)."""

    def __init__(self) -> None:
        super().__init__()
        self.stalls = 0

    async def sleep(self, seconds: float) -> None:
        before = self.now
        await super().sleep(seconds)
        self.stalls = self.stalls + 1 if self.now == before else 0
        if self.stalls >= STALL_LIMIT:
            raise AssertionError(
                f"virtual time stuck at {self.now!r}: the limiter keeps sleeping "
                f"{seconds!r}s, which does not move a clock that far from zero"
            )


def limiter(**config: Any) -> tuple[AdaptiveLimiter, WatchedClock]:
    clock = WatchedClock()
    return AdaptiveLimiter(LimitConfig(**config), clock), clock


def requests(**quota: Any) -> RateLimitInfo:
    return RateLimitInfo(requests=Quota(**quota), dialect="selam")


async def grant_times(
    lim: AdaptiveLimiter, clock: FakeClock, n: int, tokens: int = 10
) -> list[float]:
    times = []
    for _ in range(n):
        await lim.acquire(tokens)
        times.append(clock.now)
    return times


def most_in_any_span(times: list[float], span_s: float) -> int:
    """The largest number of grants inside any half-open span of `span_s` seconds."""
    return max(bisect.bisect_left(times, t + span_s) - i for i, t in enumerate(times))


# --- before any header: one probe, then unpaced until the first 429 ----------------------


@pytest.mark.anyio
async def test_before_any_answer_only_the_first_request_goes() -> None:
    """The second send waits for the first answer: its headers may tell the limit."""
    lim, clock = limiter()
    first = await lim.acquire(10)
    with anyio.move_on_after(0.05) as scope:
        await lim.acquire(10)
    assert scope.cancelled_caught
    lim.settle(first, RateLimitInfo(), None)
    start = clock.now
    await lim.acquire(10)
    assert clock.now == start


@pytest.mark.anyio
async def test_without_headers_or_429s_sends_are_not_paced() -> None:
    """A provider that never limits is limited only by concurrency: 100 grants, no wait."""
    lim, clock = limiter()
    lim.settle(await lim.acquire(10), RateLimitInfo(), 30)
    start = clock.now
    await grant_times(lim, clock, 100)
    assert clock.now == start


@pytest.mark.anyio
async def test_before_headers_a_send_after_an_idle_spell_is_immediate() -> None:
    lim, clock = limiter()
    lim.settle(await lim.acquire(10), RateLimitInfo(), None)
    clock.advance(30.0)
    start = clock.now
    await lim.acquire(10)
    assert clock.now == start


# --- learned limits -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_next_send_after_learning_60_per_10s_goes_one_interval_later() -> None:
    """Exact input: FakeClock at its default start, default config, one send, settle, one send."""
    lim, clock = limiter()
    permit = await lim.acquire(10)
    lim.settle(permit, requests(limit=60, window_s=10), None)
    start = clock.now
    await lim.acquire(10)  # the bucket starts with one request in it
    assert clock.now == start
    await lim.acquire(10)
    assert clock.now - start == pytest.approx(10 * 1.03 / 60, abs=0.01)


@pytest.mark.anyio
async def test_learned_limit_paces_at_about_six_per_second_and_never_60_in_10s() -> None:
    lim, clock = limiter()
    info = requests(limit=60, window_s=10)
    permit = await lim.acquire(10)
    lim.settle(permit, info, None)
    times = [clock.now]
    for _ in range(200):
        permit = await lim.acquire(10)
        lim.settle(permit, info, None)
        times.append(clock.now)
    steady = times[100:]
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    assert 5.5 <= rate <= 6.0
    assert most_in_any_span(times, 10.0) <= 60


@pytest.mark.anyio
async def test_rpm_ceiling_holds_when_headers_allow_more() -> None:
    lim, clock = limiter(rpm=30)
    info = requests(limit=600, window_s=60)
    times = []
    for _ in range(100):
        permit = await lim.acquire(10)
        lim.settle(permit, info, None)
        times.append(clock.now)
    assert most_in_any_span(times, 60.0) <= 30
    assert lim.snapshot()["requests"] == {
        "limit": 600,
        "window_s": 60,
        "ceiling_per_min": 30,
        "daily_limit": None,
        "remaining": None,
        "reset_in_s": None,
        "pace_per_min": pytest.approx(30 / 1.03),
    }


@pytest.mark.anyio
async def test_server_gate_remaining_zero_holds_the_next_send_until_reset() -> None:
    lim, clock = limiter()
    permit = await lim.acquire(10)
    lim.settle(permit, requests(limit=10, remaining=0, reset_s=5.0), None)
    start = clock.now
    await lim.acquire(10)
    assert clock.now - start == pytest.approx(5.0, abs=0.01)


@pytest.mark.anyio
async def test_server_gate_lets_the_reported_remaining_go_then_waits_for_reset() -> None:
    lim, clock = limiter()
    permit = await lim.acquire(10)
    lim.settle(permit, requests(remaining=2, reset_s=5.0), None)
    start = clock.now
    times = await grant_times(lim, clock, 3)
    assert [t - start for t in times] == pytest.approx([0.0, 0.0, 5.0], abs=0.01)


@pytest.mark.anyio
async def test_server_gate_counts_sends_made_after_the_answered_request() -> None:
    """remaining=1 was reported for the first send; a second send already spent it."""
    lim, clock = limiter()
    first = await lim.acquire(10)
    lim.settle(first, requests(remaining=1000), None)
    second = await lim.acquire(10)
    lim.settle(first, requests(remaining=1, reset_s=5.0), None)
    start = clock.now
    await lim.acquire(10)
    assert second.seq == 2
    assert clock.now - start == pytest.approx(5.0, abs=0.01)


@pytest.mark.anyio
async def test_reset_longer_than_max_wait_raises_wait_too_long_without_waiting() -> None:
    lim, clock = limiter(max_wait_s=120.0)
    permit = await lim.acquire(10)
    lim.settle(permit, requests(remaining=0, reset_s=600.0), None)
    start = clock.now
    with pytest.raises(WaitTooLong) as caught:
        await lim.acquire(10)
    assert caught.value.wait_s == pytest.approx(600.0)
    assert caught.value.reason == "request limit"
    assert clock.now == start


@pytest.mark.anyio
async def test_long_reset_limit_is_kept_as_a_daily_limit_not_a_pace() -> None:
    lim, _ = limiter(max_wait_s=120.0)
    permit = await lim.acquire(10)
    lim.settle(permit, requests(limit=100, remaining=40, reset_s=50_000.0), None)
    described = lim.snapshot()["requests"]
    assert isinstance(described, dict)
    assert (described["limit"], described["daily_limit"]) == (None, 100)


# --- tokens -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_token_estimate_above_tpm_never_fits() -> None:
    lim, clock = limiter(tpm=1000)
    with pytest.raises(TokensNeverFit, match="1001"):
        await lim.acquire(1001)
    await lim.acquire(1000)
    assert clock.now == 1000.0


@pytest.mark.anyio
async def test_token_estimate_above_a_learned_token_limit_never_fits() -> None:
    lim, _ = limiter()
    permit = await lim.acquire(10)
    lim.settle(permit, RateLimitInfo(tokens=Quota(limit=500, window_s=60)), None)
    with pytest.raises(TokensNeverFit):
        await lim.acquire(501)


async def _second_heavy_send_wait(used_tokens: int | None) -> float:
    # A whole-number rate (1920 tokens per 60 s = 32/s) keeps the expected waits exact.
    lim, clock = limiter(tpm=1920, window_margin=0.0)
    permit = await lim.acquire(500)
    lim.settle(permit, RateLimitInfo(), used_tokens)
    start = clock.now
    await lim.acquire(500)
    return clock.now - start


@pytest.mark.anyio
async def test_refund_of_unused_tokens_lets_the_next_heavy_send_go_sooner() -> None:
    without = await _second_heavy_send_wait(None)
    with_refund = await _second_heavy_send_wait(100)
    assert without == pytest.approx(500 / 32, abs=0.01)
    assert with_refund == pytest.approx(100 / 32, abs=0.01)


def test_budget_refund_corrects_the_logged_cost_of_that_send() -> None:
    budget = Budget("tokens", 960.0, LimitConfig(window_margin=0.0))
    budget.wait_s(500, 0.0, 0, None)
    budget.take(500, 0.0, seq=1, fallback=None)
    budget.take(300, 0.0, seq=2, fallback=None)
    budget.refund(1, estimated=500, used=120)
    assert budget.log.costs == [120.0, 300.0]
    assert budget.log.used(60.0, 0.0) == 420.0


# --- pauses and 429s ----------------------------------------------------------------------


async def _unpaced() -> tuple[AdaptiveLimiter, WatchedClock]:
    """A limiter that has seen headers giving no pace, so only pauses hold sends."""
    lim, clock = limiter()
    permit = await lim.acquire(10)
    lim.settle(permit, requests(remaining=1_000_000), None)
    return lim, clock


@pytest.mark.anyio
async def test_rate_limited_pauses_every_send_for_the_wait() -> None:
    lim, clock = await _unpaced()
    lim.rate_limited(7.0)
    start = clock.now
    granted: list[float] = []

    async def send() -> None:
        await lim.acquire(10)
        granted.append(clock.now - start)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(send)
    assert granted == pytest.approx([7.0, 7.0, 7.0], abs=0.01)
    assert lim.rate_limited_count == 1


@pytest.mark.anyio
async def test_rate_limited_without_a_wait_pauses_one_second() -> None:
    lim, clock = await _unpaced()
    lim.rate_limited(None)
    start = clock.now
    await lim.acquire(10)
    assert clock.now - start == pytest.approx(1.0)


@pytest.mark.anyio
async def test_a_shorter_pause_does_not_cut_a_longer_one() -> None:
    lim, clock = await _unpaced()
    lim.pause(10.0, "circuit breaker")
    lim.rate_limited(2.0)
    start = clock.now
    await lim.acquire(10)
    assert clock.now - start == pytest.approx(10.0)


@pytest.mark.anyio
async def test_first_429_without_headers_paces_just_under_the_admitted_rate() -> None:
    """After 20 successes in 10 s and a 429, the pace is 0.97 x 2/s."""
    lim, clock = limiter()
    for _ in range(20):
        lim.settle(await lim.acquire(10), RateLimitInfo(), 30)
        clock.advance(0.5)
    lim.rate_limited(None)
    snap = lim.snapshot()["requests"]
    assert isinstance(snap, dict)
    assert snap["pace_per_min"] == pytest.approx(0.97 * 2.0 * 60, rel=0.01)


# --- snapshot -----------------------------------------------------------------------------

BUDGET_KEYS = {
    "limit",
    "window_s",
    "ceiling_per_min",
    "daily_limit",
    "remaining",
    "reset_in_s",
    "pace_per_min",
}


def test_snapshot_before_anything_has_the_documented_keys() -> None:
    lim, _ = limiter()
    snap = lim.snapshot()
    assert set(snap) == {
        "requests",
        "tokens",
        "rate_limited",
        "paused_for_s",
        "paused_reason",
        "learning",
    }
    assert isinstance(snap["requests"], dict)
    assert isinstance(snap["tokens"], dict)
    assert set(snap["requests"]) == set(snap["tokens"]) == BUDGET_KEYS
    assert snap["requests"]["pace_per_min"] is None
    assert snap["tokens"]["pace_per_min"] is None
    assert (snap["rate_limited"], snap["paused_for_s"], snap["paused_reason"]) == (0, 0.0, None)
    assert snap["learning"] == "adaptive (no headers seen yet)"


@pytest.mark.anyio
async def test_snapshot_reports_learned_limits_gate_and_pause() -> None:
    lim, clock = limiter()
    permit = await lim.acquire(10)
    lim.settle(permit, requests(limit=10, remaining=4, reset_s=30.0, window_s=60.0), None)
    lim.rate_limited(5.0)
    clock.advance(2.0)
    snap = lim.snapshot()
    assert snap["requests"] == {
        "limit": 10,
        "window_s": 60.0,
        "ceiling_per_min": None,
        "daily_limit": None,
        "remaining": 4,
        "reset_in_s": pytest.approx(28.0),
        "pace_per_min": pytest.approx(10 / 1.03),
    }
    assert snap["rate_limited"] == 1
    assert snap["paused_for_s"] == pytest.approx(3.0)
    assert snap["paused_reason"] == "rate limited (429)"
    assert snap["learning"] == "headers"


def test_permit_records_cumulative_sends() -> None:
    assert Permit(3, 10, 3, 30) == Permit(seq=3, tokens=10, sent_requests=3, sent_tokens=30)
