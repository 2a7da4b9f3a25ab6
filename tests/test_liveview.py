"""The live display draws what the snapshot says (rendered to a string, as a terminal shows it)."""

from __future__ import annotations

import io

from rich.console import Console

from runner.app import progress_view
from runner.liveview import LiveView
from runner.progress import LogLineView, Progress


def snapshot(**changes: object) -> Progress:
    values: dict[str, object] = dict(
        total=100,
        done=40,
        failed=2,
        retrying=3,
        in_flight=8,
        queued=5,
        sent=53,
        rate_limited=7,
        requests_per_min=120.0,
        tokens_per_min=9000.0,
        tokens=4500,
        cost=0.25,
        projected_cost=0.6,
        elapsed_s=65.0,
        eta_s=90.0,
        paused=None,
        stopping=None,
    )
    values.update(changes)
    return Progress(**values)  # type: ignore[arg-type]


def drawn(progress: Progress) -> str:
    out = io.StringIO()
    view = LiveView(Console(file=out, width=100, force_terminal=True, color_system=None))
    view.show(progress)
    view.close()
    return out.getvalue()


def test_the_live_display_shows_counts_rates_cost_and_state() -> None:
    text = drawn(snapshot())
    assert "42/100" in text  # finished of total
    for label, value in [("done", "40"), ("failed", "2"), ("pending", "42"), ("answered 429", "7")]:
        assert label in text and value in text
    assert "$0.2500" in text or "0.25" in text
    assert "running" in text


def test_the_live_display_says_when_paused() -> None:
    text = drawn(snapshot(paused="rate limited (429) until 14:02:10"))
    assert "paused: rate limited (429) until 14:02:10" in text


def test_without_a_terminal_auto_means_plain_lines() -> None:
    # pytest captures stderr, so it is not a terminal.
    assert isinstance(progress_view("auto", 30.0), LogLineView)
    assert isinstance(progress_view("live", 30.0), LiveView)
    assert progress_view("off", 30.0) is None
