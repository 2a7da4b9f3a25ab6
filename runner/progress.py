"""Showing progress: a live display on a terminal, a plain line every N seconds elsewhere."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Protocol, TextIO

log = logging.getLogger("runner.progress")


@dataclass(frozen=True)
class Progress:
    """Where a run stands, as one invocation sees it."""

    total: int
    done: int
    failed: int
    retrying: int
    in_flight: int  # sent, waiting for the answer
    queued: int  # claimed from the queue, waiting for the limiter or a worker
    sent: int
    rate_limited: int
    requests_per_min: float
    tokens_per_min: float
    tokens: int
    cost: float | None
    projected_cost: float | None
    elapsed_s: float
    eta_s: float | None
    paused: str | None
    stopping: str | None

    @property
    def pending(self) -> int:
        """Jobs neither finished nor in flight nor waiting to retry."""
        busy = self.in_flight + self.queued
        return max(0, self.total - self.done - self.failed - self.retrying - busy)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def money(value: float | None) -> str:
    return "n/a" if value is None else f"${value:,.4f}"


def progress_line(p: Progress) -> str:
    """The plain one-line form, for logs and pipes."""
    parts = [
        f"{p.done + p.failed:,}/{p.total:,} finished ({p.done:,} done, {p.failed:,} failed)",
        f"{p.retrying:,} retrying",
        f"{p.in_flight:,} sending",
        f"{p.queued:,} queued",
        f"{p.pending:,} pending",
        f"{p.requests_per_min:,.0f} req/min",
        f"{p.tokens_per_min:,.0f} tok/min",
        f"cost {money(p.cost)} (projected {money(p.projected_cost)})",
        f"ETA {duration(p.eta_s)}",
    ]
    if p.paused:
        parts.append(f"paused: {p.paused}")
    if p.stopping:
        parts.append(f"stopping: {p.stopping}")
    return " · ".join(parts)


class ProgressView(Protocol):
    """Something that shows progress snapshots."""

    interval_s: float

    def show(self, progress: Progress) -> None:
        """Display the latest snapshot."""
        ...

    def close(self) -> None:
        """Stop displaying (the summary follows)."""
        ...


class LogLineView:
    """One plain line every `interval_s` seconds, for cron and pipes (no TTY needed)."""

    def __init__(self, interval_s: float = 30.0, stream: TextIO | None = None) -> None:
        self.interval_s = interval_s
        self._stream = stream or sys.stderr

    def show(self, progress: Progress) -> None:
        """Write the line to stderr, and to the log (info) for --log-file."""
        line = progress_line(progress)
        print(f"{time.strftime('%H:%M:%S')} progress: {line}", file=self._stream, flush=True)
        log.info("progress: %s", line)

    def close(self) -> None:
        """Nothing to tear down."""
