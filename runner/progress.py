"""Showing progress: a live display on a terminal, a plain line every N seconds elsewhere."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Protocol, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

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


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _money(value: float | None) -> str:
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
        f"cost {_money(p.cost)} (projected {_money(p.projected_cost)})",
        f"ETA {_duration(p.eta_s)}",
    ]
    if p.paused:
        parts.append(f"paused: {p.paused}")
    if p.stopping:
        parts.append(f"stopping: {p.stopping}")
    return " · ".join(parts)


def render(p: Progress) -> Group:
    """The live display: a bar and a table of counts, rates, cost and state."""
    finished = p.done + p.failed
    bar = ProgressBar(total=max(1, p.total), completed=finished, width=60)
    head = Text(f" {finished:,}/{p.total:,}  elapsed {_duration(p.elapsed_s)}  ETA ")
    head.append(_duration(p.eta_s), style="bold")
    table = Table.grid(padding=(0, 2))
    for _ in range(4):
        table.add_column()
    table.add_row("done", f"[green]{p.done:,}", "requests/min", f"{p.requests_per_min:,.1f}")
    table.add_row("failed", f"[red]{p.failed:,}", "tokens/min", f"{p.tokens_per_min:,.0f}")
    table.add_row("retrying", f"[yellow]{p.retrying:,}", "tokens", f"{p.tokens:,}")
    table.add_row("sending", f"{p.in_flight:,}", "cost so far", _money(p.cost))
    table.add_row("queued", f"{p.queued:,}", "projected cost", _money(p.projected_cost))
    table.add_row("pending", f"{p.pending:,}", "answered 429", f"{p.rate_limited:,}")
    table.add_row("sent", f"{p.sent:,}", "", "")
    state = Text("running", style="green")
    if finished >= p.total:
        state = Text("finished", style="bold green")
    if p.paused:
        state = Text(f"paused: {p.paused}", style="yellow")
    if p.stopping:
        state = Text(f"stopping: {p.stopping}", style="red")
    return Group(bar, head, table, state)


class ProgressView(Protocol):
    """Something that shows progress snapshots."""

    interval_s: float

    def show(self, progress: Progress) -> None:
        """Display the latest snapshot."""
        ...

    def close(self) -> None:
        """Stop displaying (the summary follows)."""
        ...


class LiveView:
    """A rich live display for terminals."""

    interval_s = 0.5

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._live: Live | None = None

    def show(self, progress: Progress) -> None:
        """Redraw."""
        if self._live is None:
            self._live = Live(render(progress), console=self.console, auto_refresh=False)
            self._live.start()
        self._live.update(render(progress), refresh=True)

    def close(self) -> None:
        """Leave the last frame on screen."""
        if self._live is not None:
            self._live.stop()
            self._live = None


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
