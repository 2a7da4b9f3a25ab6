"""What every command shares: running a coroutine, mapping errors to exit codes, finding runs."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click

from runner.errors import RunnerError, UsageError
from runner.redact import redact
from runner.store.protocol import RunRecord

T = TypeVar("T")
INTERNAL_ERROR = 70
# uvloop's event loop and sockets cost about half the CPU of asyncio's at thousands of requests
# a second; it does not exist on Windows, where asyncio's own loop serves.
HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


def call(fn: Callable[[], Awaitable[T]], secrets: tuple[str, ...] = ()) -> T:
    """Run a coroutine; turn the project's errors into a message and an exit code."""
    try:
        return anyio.run(fn, backend="asyncio", backend_options={"use_uvloop": HAVE_UVLOOP})
    except RunnerError as exc:
        click.echo(f"error: {redact(str(exc), secrets)}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(3)
    except Exception as exc:  # the last line of defence: never print a key in a traceback
        click.echo(f"internal error: {type(exc).__name__}: {redact(str(exc), secrets)}", err=True)
        sys.exit(INTERNAL_ERROR)


def db_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The --db option every command takes."""
    return click.option(
        "--db",
        default=None,
        help="SQLite file path or SQLAlchemy URL (default: $RUNNER_DB, else ./runner.db).",
    )(fn)


class Finite(click.FloatRange):
    """A float range that also refuses nan and infinity."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Convert as FloatRange does, then insist on a finite number."""
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def find_run(runs: Sequence[RunRecord], selector: str | None) -> RunRecord:
    """A run by id or results path; the newest when no selector is given."""
    if not runs:
        raise UsageError("no runs in this database yet")
    if selector is None:
        return runs[0]
    for candidate in runs:
        if selector == str(candidate.id) or str(Path(selector).resolve()) == candidate.out_path:
            return candidate
    raise UsageError(f"no run {selector!r}; `runner runs` lists them")
