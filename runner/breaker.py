"""A circuit breaker: a burst of consecutive server or connection failures pauses everyone."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CircuitBreaker:
    """Counts consecutive failures; past the threshold, asks for a growing cool-down."""

    threshold: int = 8
    cool_down_s: float = 5.0
    max_cool_down_s: float = 60.0
    consecutive: int = 0
    trips: int = 0

    def success(self) -> None:
        """Any good answer closes the breaker."""
        self.consecutive = 0
        self.trips = 0

    def failure(self) -> float | None:
        """Count one failure; return the pause to apply when the breaker trips, else None."""
        self.consecutive += 1
        if self.consecutive < self.threshold:
            return None
        self.consecutive = 0
        self.trips += 1
        # The exponent is bounded so a long outage cannot overflow the float before the cap.
        return min(self.max_cool_down_s, self.cool_down_s * 2.0 ** min(self.trips - 1, 32))
