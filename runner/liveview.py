"""The live progress display for terminals, drawn with rich.

Apart from `runner.progress` because rich costs about 25 ms of start-up, which runs without a
terminal (cron, pipes) never need.
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from runner.progress import Progress, duration, money


def render(p: Progress) -> Group:
    """The live display: a bar and a table of counts, rates, cost and state."""
    finished = p.done + p.failed
    bar = ProgressBar(total=max(1, p.total), completed=finished, width=60)
    head = Text(f" {finished:,}/{p.total:,}  elapsed {duration(p.elapsed_s)}  ETA ")
    head.append(duration(p.eta_s), style="bold")
    table = Table.grid(padding=(0, 2))
    for _ in range(4):
        table.add_column()
    table.add_row("done", f"[green]{p.done:,}", "requests/min", f"{p.requests_per_min:,.1f}")
    table.add_row("failed", f"[red]{p.failed:,}", "tokens/min", f"{p.tokens_per_min:,.0f}")
    table.add_row("retrying", f"[yellow]{p.retrying:,}", "tokens", f"{p.tokens:,}")
    table.add_row("sending", f"{p.in_flight:,}", "cost so far", money(p.cost))
    table.add_row("queued", f"{p.queued:,}", "projected cost", money(p.projected_cost))
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
