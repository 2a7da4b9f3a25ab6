"""The request rate to use when a provider sends no rate-limit headers, learned from 429s.

Until the provider first refuses a request there is nothing to pace by: sends are bounded by
concurrency alone (the limiter lets a single probe go first, so a provider that does send
headers is heard before anything else goes). From the first 429 on, the provider's real
allowance shows in what it admitted: while we are refused now and then, successes per second
over the recent past are the limit. A 429 sets the rate just under that measured rate (or
cuts it, whichever is lower); each success probes a little higher.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class AdaptiveRate:
    """Requests per second for a provider that only speaks in 429s (None: not limited yet)."""

    rps: float | None = None
    probe_factor: float = 1.002  # growth per success once a limit has been met
    decrease: float = 0.9
    headroom: float = 0.97
    horizon_s: float = 30.0
    floor_rps: float = 0.02
    _successes: deque[float] = field(default_factory=deque)
    _first_success: float | None = None

    def success(self, now: float) -> None:
        """An admitted request."""
        if self._first_success is None:
            self._first_success = now
        self._successes.append(now)
        while self._successes and self._successes[0] < now - self.horizon_s:
            self._successes.popleft()
        if self.rps is not None:
            self.rps *= self.probe_factor

    def admitted_rps(self, now: float) -> float | None:
        """Successes per second over the horizon (at least a second of it), if any."""
        if self._first_success is None:
            return None
        span = max(1.0, min(self.horizon_s, now - self._first_success))
        recent = sum(1 for t in self._successes if t >= now - span)
        return recent / span

    def rate_limited(self, now: float) -> None:
        """A 429: fall to just under what the provider has been admitting."""
        measured = self.admitted_rps(now)
        candidates = [] if self.rps is None else [self.rps * self.decrease]
        if measured is not None:
            candidates.append(measured * self.headroom)
        self.rps = max(self.floor_rps, min(candidates, default=self.floor_rps))
