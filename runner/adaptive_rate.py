"""The request rate to use when a provider sends no rate-limit headers, learned from 429s.

Slow start grows the rate geometrically until the first 429. From then on the provider's real
allowance shows in what it admitted: while we are being refused now and then, successes per
second over the recent past are the limit. A 429 sets the rate just under that measured rate
(or cuts it, whichever is lower); each success probes a little higher.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class AdaptiveRate:
    """Requests per second for a provider that only speaks in 429s."""

    rps: float = 1.0
    slow_start_factor: float = 1.25
    probe_factor: float = 1.002  # growth per success once a limit has been met
    decrease: float = 0.9
    headroom: float = 0.97
    horizon_s: float = 30.0
    floor_rps: float = 0.02
    slow_start: bool = True
    _successes: deque[float] = field(default_factory=deque)
    _first_success: float | None = None

    def success(self, now: float) -> None:
        """An admitted request."""
        if self._first_success is None:
            self._first_success = now
        self._successes.append(now)
        while self._successes and self._successes[0] < now - self.horizon_s:
            self._successes.popleft()
        self.rps *= self.slow_start_factor if self.slow_start else self.probe_factor

    def admitted_rps(self, now: float) -> float | None:
        """Successes per second over the horizon (None before there is a second of history)."""
        if self._first_success is None:
            return None
        span = min(self.horizon_s, now - self._first_success)
        if span < 1.0:
            return None
        recent = sum(1 for t in self._successes if t >= now - span)
        return recent / span

    def rate_limited(self, now: float) -> None:
        """A 429: fall to just under what the provider has been admitting."""
        self.slow_start = False
        cut = self.rps * self.decrease
        measured = self.admitted_rps(now)
        if measured is not None:
            cut = min(cut, measured * self.headroom)
        self.rps = max(self.floor_rps, cut)
