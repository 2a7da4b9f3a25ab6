"""A log of our own sends with a running total per window length, so checks cost O(1).

A limiter asks "how much did we send in the last W seconds?" on every send; summing the log
each time would cost O(limit) per request, which at thousands of requests a minute is most of
the CPU. Each window keeps a cursor into the shared log and the sum of what lies after it.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

_COMPACT_AT = 4096


@dataclass
class _Window:
    cursor: int
    total: float


@dataclass
class SendLog:
    """Send times and costs, oldest first, with per-window running totals."""

    times: list[float] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    _windows: dict[float, _Window] = field(default_factory=dict)

    def append(self, now: float, cost: float, seq: int) -> None:
        """Record a send."""
        self.times.append(now)
        self.costs.append(cost)
        self.seqs.append(seq)
        for window in self._windows.values():
            window.total += cost

    def _window(self, length_s: float, now: float) -> _Window:
        window = self._windows.get(length_s)
        if window is None:
            cursor = bisect_right(self.times, now - length_s)
            window = _Window(cursor, sum(self.costs[cursor:]))
            self._windows[length_s] = window
        while window.cursor < len(self.times) and self.times[window.cursor] <= now - length_s:
            window.total -= self.costs[window.cursor]
            window.cursor += 1
        return window

    def keep_only(self, lengths: set[float]) -> None:
        """Stop tracking windows that no longer apply."""
        for length in [w for w in self._windows if w not in lengths]:
            del self._windows[length]

    def used(self, length_s: float, now: float) -> float:
        """What was sent in the last `length_s` seconds."""
        return max(0.0, self._window(length_s, now).total)

    def wait_s(self, length_s: float, limit: float, cost: float, now: float) -> float:
        """Seconds until `cost` more fits under `limit` per `length_s` (0 if it fits now)."""
        window = self._window(length_s, now)
        excess = window.total + cost - limit
        index = window.cursor
        while excess > 0 and index < len(self.times):
            excess -= self.costs[index]
            if excess <= 0:
                return self.times[index] + length_s - now
            index += 1
        return 0.0

    def correct(self, seq: int, new_cost: float) -> None:
        """Replace the cost of the send `seq` (an estimate settled by real usage)."""
        index = bisect_right(self.seqs, seq) - 1
        if index < 0 or self.seqs[index] != seq:
            return
        delta = new_cost - self.costs[index]
        self.costs[index] = new_cost
        for window in self._windows.values():
            if index >= window.cursor:
                window.total += delta

    def forget_before(self, now: float, longest_s: float) -> None:
        """Drop entries older than the longest window, in amortised batches."""
        cut = bisect_right(self.times, now - longest_s)
        if cut < _COMPACT_AT or cut * 2 < len(self.times):
            return
        for window in self._windows.values():
            if window.cursor < cut:
                window.total -= sum(self.costs[window.cursor : cut])
                window.cursor = cut
            window.cursor -= cut
        del self.times[:cut], self.costs[:cut], self.seqs[:cut]
