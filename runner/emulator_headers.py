"""The emulator's rate limits: the sliding-window state, and the headers that report it.

`RateWindow` decides admission (a strict sliding window over a log of admitted requests and
their tokens, plus a count per "day") and snapshots every configured limit as a `LimitState`.
`rate_limit_headers` formats a snapshot in one of these dialects (pure; reads no clock):

    selam            X-RateLimit-Limit / -Remaining / -Reset / -Reset-After for the binding
                     request limit (the per-window or the daily one, whichever has less left);
                     Reset-After (3 decimals) runs until the oldest admitted request leaves the
                     window (window_s when empty), Reset is that moment as epoch s, epoch ms or
                     whole delta seconds
    openai           x-ratelimit-{limit,remaining,reset}-{requests,tokens}; reset is the time
                     until the budget is fully restored, as a duration such as `6m0s` or `250ms`
    ietf             RateLimit-Limit (`5, 5;w=60, 100;w=86400`), RateLimit-Remaining and
                     RateLimit-Reset in whole seconds (draft -01 to -06)
    ietf-structured  RateLimit-Policy and RateLimit structured fields, one item per limit
                     named "requests", "tokens" and "daily" (drafts -08 and later)
    none             nothing (and every dialect sends nothing when no limit is configured)

"Remaining" and "reset" describe the state after the current request was counted.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

DIALECTS = ("selam", "openai", "ietf", "ietf-structured", "none")
RESET_FORMATS = ("epoch_s", "epoch_ms", "delta")

# Float noise (10.000000001 s) must not turn into an extra whole second.
_EPSILON_S = 1e-9


@dataclass(frozen=True)
class LimitState:
    """One limit as it stands right after the current request was counted."""

    name: str  # "requests", "tokens" or "daily"
    quota: int
    window_s: float
    remaining: int
    reset_s: float  # until the oldest admitted unit leaves (more quota); window_s if none held
    full_reset_s: float  # until the whole quota is back; 0 when nothing is used

    @property
    def counts_requests(self) -> bool:
        """Whether the quota counts requests (as opposed to tokens)."""
        return self.name != "tokens"


@dataclass(frozen=True)
class Rejection:
    """Why a request was not admitted and how long until it could be."""

    reason: str  # "daily", "window" or "too_large" (more tokens than the whole window holds)
    wait_s: float


class RateWindow:
    """Admission control: a strict sliding window of requests and tokens, and a daily count."""

    def __init__(
        self,
        *,
        limit_requests: int | None,
        limit_tokens: int | None,
        window_s: float,
        daily_limit: int | None,
        day_s: float,
    ) -> None:
        self.limit_requests, self.limit_tokens, self.window_s = (
            limit_requests,
            limit_tokens,
            window_s,
        )
        self.daily_limit, self.day_s = daily_limit, day_s
        self._log: deque[tuple[float, int]] = deque()  # (admitted at, tokens), oldest first
        self._tokens = 0
        self._day = 0
        self._day_count = 0

    def _prune(self, now: float) -> None:
        while self._log and self._log[0][0] + self.window_s <= now:
            self._tokens -= self._log.popleft()[1]
        day = math.floor(now / self.day_s)
        if day != self._day:
            self._day, self._day_count = day, 0

    def check(self, now: float, tokens: int) -> Rejection | None:
        """None if a request of `tokens` may be admitted now, else why not."""
        self._prune(now)
        if self.daily_limit is not None and self._day_count >= self.daily_limit:
            return Rejection("daily", (self._day + 1) * self.day_s - now)
        if self.limit_tokens is not None and tokens > self.limit_tokens:
            return Rejection("too_large", 0.0)
        wait = max(self._request_wait(now), self._token_wait(now, tokens))
        return Rejection("window", wait) if wait > 0 else None

    def _request_wait(self, now: float) -> float:
        limit = self.limit_requests
        if limit is None or len(self._log) < limit:
            return 0.0
        # One slot frees when the entry `limit` places from the newest leaves the window.
        return self._log[len(self._log) - limit][0] + self.window_s - now

    def _token_wait(self, now: float, tokens: int) -> float:
        limit = self.limit_tokens
        excess = 0 if limit is None else self._tokens + tokens - limit
        for admitted_at, held in self._log:
            if excess <= 0:
                break
            excess -= held
            if excess <= 0:
                return admitted_at + self.window_s - now
        return 0.0

    def admit(self, now: float, tokens: int) -> None:
        """Count an admitted request (call right after a successful `check`)."""
        self._log.append((now, tokens))
        self._tokens += tokens
        self._day_count += 1

    def limits(self, now: float) -> list[LimitState]:
        """A snapshot of every configured limit, for the rate-limit headers."""
        self._prune(now)
        log = self._log
        reset_s = log[0][0] + self.window_s - now if log else self.window_s
        full_s = log[-1][0] + self.window_s - now if log else 0.0
        out: list[LimitState] = []
        windowed = (
            ("requests", self.limit_requests, len(log)),
            ("tokens", self.limit_tokens, self._tokens),
        )
        for name, quota, used in windowed:
            if quota is not None:
                out.append(
                    LimitState(name, quota, self.window_s, max(0, quota - used), reset_s, full_s)
                )
        if self.daily_limit is not None:
            day_end_s = (self._day + 1) * self.day_s - now
            remaining = max(0, self.daily_limit - self._day_count)
            used_s = day_end_s if self._day_count else 0.0
            out.append(
                LimitState("daily", self.daily_limit, self.day_s, remaining, day_end_s, used_s)
            )
        return out


def ceil_s(seconds: float) -> int:
    """Whole seconds, rounded up, never negative."""
    return max(0, math.ceil(seconds - _EPSILON_S))


def format_duration(seconds: float) -> str:
    """An OpenAI reset duration: `0s`, `250ms`, `1s`, `8.5s`, `6m0s`, `1h2m5.2s`."""
    if seconds <= 0:
        return "0s"
    ms = max(1, round(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    hours, rest_ms = divmod(ms, 3_600_000)
    minutes, rest_ms = divmod(rest_ms, 60_000)
    secs = f"{rest_ms / 1000:.3f}".rstrip("0").rstrip(".")
    prefix = (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "")
    return f"{prefix}{secs}s"


def rate_limit_headers(
    dialect: str, limits: Sequence[LimitState], now_epoch_s: float, reset_format: str
) -> dict[str, str]:
    """The headers of `dialect` for these limits; empty when no limit is configured."""
    if not limits or dialect == "none":
        return {}
    if dialect == "selam":
        return _selam(limits, now_epoch_s, reset_format)
    if dialect == "openai":
        return _openai(limits)
    if dialect == "ietf":
        return _ietf(limits)
    if dialect == "ietf-structured":
        return _ietf_structured(limits)
    raise ValueError(f"unknown rate-limit dialect {dialect!r}; expected one of {DIALECTS}")


def _request_pool(limits: Sequence[LimitState]) -> list[LimitState]:
    """The request-counting limits; the token limit only when it is the sole one."""
    pool = [limit for limit in limits if limit.counts_requests]
    return pool or list(limits)


def _binding(pool: Sequence[LimitState]) -> LimitState:
    """The limit that bites first: least remaining, then the longest wait for more."""
    return min(pool, key=lambda limit: (limit.remaining, -limit.reset_s))


def _selam(limits: Sequence[LimitState], now_epoch_s: float, reset_format: str) -> dict[str, str]:
    limit = _binding(_request_pool(limits))
    reset_at = now_epoch_s + limit.reset_s
    if reset_format == "epoch_s":
        reset = str(math.ceil(reset_at))
    elif reset_format == "epoch_ms":
        reset = str(math.ceil(reset_at * 1000))
    else:
        reset = str(ceil_s(limit.reset_s))
    return {
        "X-RateLimit-Limit": str(limit.quota),
        "X-RateLimit-Remaining": str(limit.remaining),
        "X-RateLimit-Reset": reset,
        "X-RateLimit-Reset-After": f"{limit.reset_s:.3f}",
    }


def _openai(limits: Sequence[LimitState]) -> dict[str, str]:
    headers: dict[str, str] = {}
    requests = [limit for limit in limits if limit.counts_requests]
    tokens = [limit for limit in limits if not limit.counts_requests]
    for suffix, pool in (("requests", requests), ("tokens", tokens)):
        if pool:
            limit = _binding(pool)
            headers[f"x-ratelimit-limit-{suffix}"] = str(limit.quota)
            headers[f"x-ratelimit-remaining-{suffix}"] = str(limit.remaining)
            headers[f"x-ratelimit-reset-{suffix}"] = format_duration(limit.full_reset_s)
    return headers


def _ietf(limits: Sequence[LimitState]) -> dict[str, str]:
    pool = _request_pool(limits)
    limit = _binding(pool)
    policies = ", ".join(f"{item.quota};w={_seconds(item.window_s)}" for item in pool)
    return {
        "RateLimit-Limit": f"{limit.quota}, {policies}",
        "RateLimit-Remaining": str(limit.remaining),
        "RateLimit-Reset": str(ceil_s(limit.reset_s)),
    }


def _ietf_structured(limits: Sequence[LimitState]) -> dict[str, str]:
    policy = ", ".join(f'"{x.name}";q={x.quota};w={_seconds(x.window_s)}' for x in limits)
    state = ", ".join(f'"{x.name}";r={x.remaining};t={ceil_s(x.reset_s)}' for x in limits)
    return {"RateLimit-Policy": policy, "RateLimit": state}


def _seconds(value: float) -> str:
    """A window length: an integer when whole (as the drafts expect), else a short decimal."""
    if value == int(value):
        return str(int(value))
    return f"{value:.3f}".rstrip("0")
