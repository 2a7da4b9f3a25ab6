"""The limiter: paces requests and tokens so the provider's limits are used, not exceeded.

Each budget (requests, tokens) combines three gates, and a send waits for all of them:

- a token bucket at the allowed rate with a burst of a few seconds, because providers enforce
  per-minute limits over shorter slices;
- a sliding log of our own sends, so no window of the limit's length ever holds more than the
  limit (the window is stretched by a small margin for network jitter);
- the server's own count: the last `remaining` it reported, minus what we sent after the request
  it answered, until its reset time.

Limits are learned from every response's headers (not once); `--rpm` / `--tpm` are ceilings the
learner never exceeds. With no headers at all the request rate adapts to 429s (additive increase,
multiplicative decrease, see adaptive_rate). Every wait comes from the injected clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import anyio

from runner.adaptive_rate import AdaptiveRate
from runner.clock import Clock
from runner.ratelimit_headers import Quota, RateLimitInfo
from runner.sendlog import SendLog

DEFAULT_WINDOW_S = 60.0
DAY_S = 86_400.0
_POLL_S = 0.25
_EPSILON_S = 1e-6
# How long a probe sent after a reset may go unanswered before another is allowed.
_PROBE_S = 2.0


class TokensNeverFit(Exception):
    """A request's token estimate exceeds the whole token budget: it can never be sent."""


class WaitTooLong(Exception):
    """The next send would have to wait longer than the run allows (a long-window quota)."""

    def __init__(self, wait_s: float, reason: str) -> None:
        super().__init__(f"{reason}: next send possible in {wait_s:.0f}s")
        self.wait_s = wait_s
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Permit:
    """Proof of a granted send, handed back with the answer so the limiter can learn from it."""

    seq: int
    tokens: int
    sent_requests: int  # cumulative requests sent when this permit was granted (inclusive)
    sent_tokens: int


class Limiter(Protocol):
    """What the engine needs from a limiter."""

    def try_acquire(self, tokens: int) -> Permit | None:
        """A permit at once if one is free without waiting, else None (then `acquire`)."""
        ...

    async def acquire(self, tokens: int) -> Permit:
        """Wait until one request costing `tokens` may be sent."""
        ...

    def settle(self, permit: Permit, info: RateLimitInfo, used_tokens: int | None) -> None:
        """Learn from an answer's headers and its real token usage."""
        ...

    def rate_limited(self, wait_s: float | None) -> None:
        """A 429 arrived: hold every send for the wait and adapt."""
        ...

    def pause(self, seconds: float, reason: str) -> None:
        """Hold every send for `seconds` (circuit breaker, server asked to wait)."""
        ...

    def snapshot(self) -> dict[str, object]:
        """The limiter's state, for status displays."""
        ...


@dataclass(frozen=True)
class LimitConfig:
    """Ceilings and tuning; every field has a safe default so no flag is needed."""

    rpm: float | None = None
    tpm: float | None = None
    rpd: float | None = None
    burst_s: float = 2.0
    window_margin: float = 0.03
    max_wait_s: float = 120.0


@dataclass
class Budget:
    """One dimension (requests or tokens): learned limit, pacing bucket, send log, server gate."""

    name: str
    ceiling_per_min: float | None
    config: LimitConfig
    limit: float | None = None
    window_s: float | None = None
    level: float = 0.0
    stamp: float | None = None
    daily_cap: float | None = None
    log: SendLog = field(default_factory=SendLog)
    gate_remaining: float | None = None
    gate_at_sent: float = 0.0
    gate_seq: int = -1
    gate_until: float | None = None
    long_limit: float | None = None  # a daily-style cap seen in headers (gate only)

    def windows(self) -> list[tuple[float, float]]:
        """(limit, window length) pairs this budget must respect."""
        pairs: list[tuple[float, float]] = []
        stretch = 1.0 + self.config.window_margin
        if self.limit is not None:
            pairs.append((self.limit, (self.window_s or DEFAULT_WINDOW_S) * stretch))
        if self.ceiling_per_min is not None:
            pairs.append((self.ceiling_per_min, 60.0 * stretch))
        if self.daily_cap is not None:
            pairs.append((self.daily_cap, DAY_S))
        return pairs

    def rate(self, fallback: float | None) -> float | None:
        """Units per second to pace at; None means unpaced."""
        rates = [limit / window for limit, window in self.windows() if window < DAY_S]
        if not rates:
            return fallback
        return min(rates)

    def capacity(self, rate: float) -> float:
        """The bucket's size: a few seconds' worth, at least one request.

        With no known window there is no send log to stop a burst from overfilling the
        provider's window after a pause, so sends are strictly paced instead.
        """
        if not self.windows():
            return 1.0
        return max(1.0, rate * self.config.burst_s)

    def wait_s(self, cost: float, now: float, sent_total: float, fallback: float | None) -> float:
        """Seconds until `cost` more units may go."""
        return max(
            self._bucket_wait(cost, now, fallback),
            self._log_wait(cost, now),
            self._gate_wait(cost, now, sent_total),
        )

    def _refill(self, now: float, rate: float) -> None:
        cap = self.capacity(rate)
        if self.stamp is None:
            self.level = min(cap, 1.0) if self.name == "requests" else cap
        else:
            self.level = min(cap, self.level + rate * max(0.0, now - self.stamp))
        self.stamp = now

    def _bucket_wait(self, cost: float, now: float, fallback: float | None) -> float:
        rate = self.rate(fallback)
        if rate is None or rate <= 0:
            return 0.0
        self._refill(now, rate)
        need = min(cost, self.capacity(rate))
        return max(0.0, (need - self.level) / rate)

    def server_wait_s(self, cost: float, now: float, sent_total: float) -> float:
        """The part of the wait the provider imposes (its count, its windows), not our ceilings."""
        learned = [(limit, w) for limit, w in self.windows() if self._is_provider_window(limit, w)]
        log_wait = max((self.log.wait_s(w, lim, cost, now) for lim, w in learned), default=0.0)
        return max(log_wait, self._gate_wait(cost, now, sent_total))

    def _is_provider_window(self, limit: float, window: float) -> bool:
        if window >= DAY_S:
            return True  # --rpd is the plan's daily allowance: a quota either way
        return limit == self.limit and limit != self.ceiling_per_min

    def _log_wait(self, cost: float, now: float) -> float:
        windows = self.windows()
        self.log.keep_only({length for _, length in windows})
        return max((self.log.wait_s(w, limit, cost, now) for limit, w in windows), default=0.0)

    def _gate_wait(self, cost: float, now: float, sent_total: float) -> float:
        if self.gate_remaining is None:
            return 0.0
        available = self.gate_remaining - (sent_total - self.gate_at_sent)
        if available >= min(cost, 1.0 if self.name == "requests" else cost):
            return 0.0
        if self.gate_until is not None and now >= self.gate_until:
            if self.name != "requests":
                self.gate_remaining = None
                return 0.0
            # The reset moment passed: at least one request is back, perhaps all (the docs do
            # not say which). Send one probe and let its answer's headers say how many.
            self.gate_remaining, self.gate_at_sent = 1.0, sent_total
            self.gate_until = now + _PROBE_S
            return 0.0
        return (self.gate_until - now) if self.gate_until is not None else _POLL_S

    def take(self, cost: float, now: float, seq: int, fallback: float | None) -> None:
        """Spend `cost` units now."""
        if self.rate(fallback) is not None:
            self.level -= cost
        windows = self.windows()
        if windows:
            self.log.append(now, cost, seq)
            self.log.forget_before(now, max(length for _, length in windows))

    def refund(self, seq: int, estimated: float, used: float) -> None:
        """Correct an estimate with the real usage."""
        self.level += estimated - used
        self.log.correct(seq, used)

    def learn(self, quota: Quota, seq: int, sent_total: float, now: float) -> None:
        """Take in what one answer said about this budget."""
        long_window = quota.reset_s is not None and quota.reset_s > self.config.max_wait_s
        if quota.limit is not None and quota.limit > 0:
            if long_window and quota.window_s is None:
                self.long_limit = quota.limit
            else:
                self.limit = quota.limit
        if quota.window_s is not None and quota.window_s > 0:
            self.window_s = quota.window_s
        elif quota.reset_s is not None and not long_window and quota.limit is not None:
            # The longest span seen is the best lower bound on the window's length; rounded up
            # to half seconds so jitter in the reported value does not re-key the send log.
            window = max(self.window_s or 0.0, math.ceil(quota.reset_s * 2) / 2)
            implied = self._span_from_own_sends(quota, now)
            if implied > 1.5 * window:
                # Only short resets seen so far (the run began in a nearly full window).
                window = round(implied * 2) / 2
            self.window_s = window
        if quota.remaining is not None and seq >= self.gate_seq:
            self.gate_seq = seq
            self.gate_remaining = quota.remaining
            self.gate_at_sent = sent_total
            self.gate_until = _gate_until(quota, now)

    def _span_from_own_sends(self, quota: Quota, now: float) -> float:
        """Window length implied by "k counted, oldest leaves in reset_s" and our own send times.

        A run that starts into a nearly full window only ever sees short resets; but if the k
        requests the server counts are ours, the oldest left at our k-th most recent send, so
        the window is at least reset_s + (now - that send). Other clients' requests make this
        an overestimate, which only makes pacing more careful.
        """
        if quota.reset_is_full or quota.limit is None or quota.remaining is None:
            return 0.0
        counted = int(quota.limit - quota.remaining)
        times = self.log.times
        if counted < 1 or counted > len(times) or quota.reset_s is None:
            return 0.0
        return quota.reset_s + (now - times[-counted])

    def describe(self, now: float, fallback: float | None) -> dict[str, object]:
        """This budget's state for status."""
        rate = self.rate(fallback)
        return {
            "limit": self.limit,
            "window_s": self.window_s,
            "ceiling_per_min": self.ceiling_per_min,
            "daily_limit": self.long_limit,
            "remaining": self.gate_remaining,
            "reset_in_s": None if self.gate_until is None else max(0.0, self.gate_until - now),
            "pace_per_min": None if rate is None else rate * 60.0,
        }


def _gate_until(quota: Quota, now: float) -> float | None:
    if quota.reset_s is None:
        return None
    if quota.reset_is_full and quota.limit and quota.remaining is not None:
        # "Fully restored in T" refills steadily: the next unit frees after T / missing units.
        missing = max(1.0, quota.limit - quota.remaining)
        return now + quota.reset_s / missing
    return now + quota.reset_s


class AdaptiveLimiter:
    """The runner's limiter; see the module docstring."""

    def __init__(self, config: LimitConfig, clock: Clock) -> None:
        self.config = config
        self._clock = clock
        self.requests = Budget("requests", config.rpm, config, daily_cap=config.rpd)
        self.tokens = Budget("tokens", config.tpm, config)
        self._lock = anyio.Lock()
        self._seq = 0
        self._sent_requests = 0
        self._sent_tokens = 0
        self._pause_until = 0.0
        self._pause_reason = ""
        self._headers_seen = False
        self._blind = AdaptiveRate()
        self._answered = 0
        self.rate_limited_count = 0

    def _fallback(self) -> float | None:
        return None if self._headers_seen else self._blind.rps

    def _fallback_known(self) -> bool:
        return self.config.rpm is not None or self.config.tpm is not None

    def _check_fits(self, tokens: int) -> None:
        caps = [c for c in (self.tokens.limit, self.config.tpm) if c is not None]
        if caps and tokens > min(caps):
            raise TokensNeverFit(
                f"needs about {tokens} tokens but the token budget is {min(caps):.0f} per window"
            )

    def _wait_s(self, tokens: int, now: float) -> tuple[float, str]:
        if self._answered == 0 and self._seq > 0 and not self._fallback_known():
            # The first request goes alone: its answer's headers may tell the limit.
            return _POLL_S, "waiting for the first answer"
        waits = [
            (self._pause_until - now, self._pause_reason or "paused"),
            (self.requests.wait_s(1, now, self._sent_requests, self._fallback()), "request limit"),
            (self.tokens.wait_s(tokens, now, self._sent_tokens, None), "token limit"),
        ]
        return max(waits, key=lambda pair: pair[0])

    def try_acquire(self, tokens: int) -> Permit | None:
        """A permit at once if one is free without waiting, else None (then `acquire`).

        Synchronous, so nothing interleaves with it; it never overtakes a send already
        waiting for the lock, which keeps waiters in order."""
        self._check_fits(tokens)
        now = self._clock.monotonic()
        if self._unlimited(now):
            # Nothing is known to limit sends: skip the budget arithmetic.
            return self._take(tokens, now)
        if self._lock.locked() or self._wait_s(tokens, now)[0] > _EPSILON_S:
            return None
        return self._take(tokens, now)

    async def acquire(self, tokens: int) -> Permit:
        """Wait until one request costing `tokens` may be sent."""
        permit = self.try_acquire(tokens)
        if permit is not None:
            return permit
        async with self._lock:
            while True:
                now = self._clock.monotonic()
                wait, reason = self._wait_s(tokens, now)
                # Float rounding can leave waits too small to move a clock forward.
                if wait <= _EPSILON_S:
                    return self._take(tokens, now)
                if wait > self.config.max_wait_s and self._server_wait_s(tokens, now) > (
                    self.config.max_wait_s
                ):
                    raise WaitTooLong(wait, self._why_long(reason, now))
                await self._clock.sleep(min(wait, _POLL_S))

    def _server_wait_s(self, tokens: int, now: float) -> float:
        """Waits a long-window quota or a server pause imposes (our own ceilings never count)."""
        return max(
            self._pause_until - now,
            self.requests.server_wait_s(1, now, self._sent_requests),
            self.tokens.server_wait_s(tokens, now, self._sent_tokens),
        )

    def _unlimited(self, now: float) -> bool:
        return (
            self._answered > 0
            and not self._headers_seen
            and self._blind.rps is None
            and self.config.rpm is None
            and self.config.tpm is None
            and self.config.rpd is None
            and self.tokens.limit is None
            and self.tokens.gate_remaining is None
            and self._pause_until <= now
        )

    def _why_long(self, reason: str, now: float) -> str:
        rpd = self.config.rpd
        if rpd is not None and self.requests.log.used(DAY_S, now) >= rpd:
            return f"the daily request cap (--rpd {rpd:g}) is reached"
        return reason

    def seed_sends(self, sent_at: list[float]) -> None:
        """Count earlier sends (wall-clock times, e.g. from other runs) against the daily cap."""
        if self.config.rpd is None:
            return
        now_mono, now_wall = self._clock.monotonic(), self._clock.time()
        for wall in sorted(sent_at):
            if now_wall - wall < DAY_S:
                self.requests.log.append(now_mono - (now_wall - wall), 1.0, 0)

    def _take(self, tokens: int, now: float) -> Permit:
        self._seq += 1
        self._sent_requests += 1
        self._sent_tokens += tokens
        self.requests.take(1, now, self._seq, self._fallback())
        self.tokens.take(tokens, now, self._seq, None)
        return Permit(self._seq, tokens, self._sent_requests, self._sent_tokens)

    def settle(self, permit: Permit, info: RateLimitInfo, used_tokens: int | None) -> None:
        """Learn from an answer's headers and its real token usage."""
        now = self._clock.monotonic()
        self._answered += 1
        if info.requests is not None:
            self._headers_seen = True
            self.requests.learn(info.requests, permit.seq, permit.sent_requests, now)
        if info.tokens is not None:
            self.tokens.learn(info.tokens, permit.seq, permit.sent_tokens, now)
        if used_tokens is not None and used_tokens < permit.tokens:
            self.tokens.refund(permit.seq, permit.tokens, used_tokens)
        if not self._headers_seen and used_tokens is not None:
            self._blind.success(now)

    def rate_limited(self, wait_s: float | None) -> None:
        """A 429 arrived: hold every send for the wait and adapt."""
        self.rate_limited_count += 1
        if not self._headers_seen:
            self._blind.rate_limited(self._clock.monotonic())
        self.pause(wait_s if wait_s is not None else 1.0, "rate limited (429)")

    def pause(self, seconds: float, reason: str) -> None:
        """Hold every send for `seconds`."""
        until = self._clock.monotonic() + max(0.0, seconds)
        if until > self._pause_until:
            self._pause_until = until
            self._pause_reason = reason

    def snapshot(self) -> dict[str, object]:
        """The limiter's state, for status displays."""
        now = self._clock.monotonic()
        paused = self._pause_until - now
        return {
            "requests": self.requests.describe(now, self._fallback()),
            "tokens": self.tokens.describe(now, None),
            "rate_limited": self.rate_limited_count,
            "paused_for_s": max(0.0, paused),
            "paused_reason": self._pause_reason if paused > 0 else None,
            "learning": "headers" if self._headers_seen else "adaptive (no headers seen yet)",
        }
