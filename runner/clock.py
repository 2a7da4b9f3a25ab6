"""Time as an injected dependency, so tests move a clock instead of sleeping."""

from __future__ import annotations

import time
from typing import Protocol

import anyio
import anyio.lowlevel


class Clock(Protocol):
    """Where the runner reads time and waits."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; for intervals."""
        ...

    def time(self) -> float:
        """Wall-clock Unix time in seconds; for timestamps stored or shown."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` (cancellable)."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        """Seconds from `time.monotonic`."""
        return time.monotonic()

    def time(self) -> float:
        """Seconds from `time.time`."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Sleep with anyio, so cancellation interrupts it."""
        await anyio.sleep(max(0.0, seconds))


class FakeClock:
    """A virtual clock: `sleep` jumps time forward at once (for tests and simulations)."""

    def __init__(self, start_s: float = 1_000.0, wall_offset_s: float = 1_700_000_000.0) -> None:
        self.now = start_s
        self.wall_offset_s = wall_offset_s
        self.slept: list[float] = []

    def monotonic(self) -> float:
        """The virtual time."""
        return self.now

    def time(self) -> float:
        """The virtual time shifted to a plausible Unix epoch."""
        return self.now + self.wall_offset_s

    def advance(self, seconds: float) -> None:
        """Move time forward without waiting."""
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        """Record the wait, jump time forward, and yield to other tasks."""
        seconds = max(0.0, seconds)
        self.slept.append(seconds)
        self.now += seconds
        await anyio.lowlevel.checkpoint()
