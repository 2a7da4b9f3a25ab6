"""The command line: parse options, build settings, call the engine, map errors to exit codes.

Exit codes: 0 all jobs done; 1 the run finished with jobs failed for good; 2 bad usage or bad
input (nothing was sent); 3 stopped early but resumable (interrupted, quota); 4 the API refused
the key or permission; 6 another process is already working on this run; 70 internal error.
"""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click

from runner.app import api_target, exit_code, run_job
from runner.clock import SystemClock
from runner.config import Environment, RunOptions
from runner.emulator import EmulatorConfig, serve_forever
from runner.errors import RunnerError, UsageError
from runner.redact import RedactingFilter, redact
from runner.report import runs_line, status_text, summary
from runner.store.migrate import upgrade
from runner.store.sql import database_exists, open_existing_store, open_store

T = TypeVar("T")
INTERNAL_ERROR = 70


def _setup_logging(level: str, secrets: tuple[str, ...]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger("runner")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def _call(fn: Callable[[], Awaitable[T]], secrets: tuple[str, ...] = ()) -> T:
    """Run a coroutine; turn the project's errors into a message and an exit code."""
    try:
        return anyio.run(fn, backend="asyncio")
    except RunnerError as exc:
        click.echo(f"error: {redact(str(exc), secrets)}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(3)
    except Exception as exc:  # the last line of defence: never print a key in a traceback
        click.echo(f"internal error: {type(exc).__name__}: {redact(str(exc), secrets)}", err=True)
        sys.exit(INTERNAL_ERROR)


def _db_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--db",
        default=None,
        help="SQLite file path or SQLAlchemy URL (default: $RUNNER_DB, else ./runner.db).",
    )(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="runner")
def main() -> None:
    """Run files of chat-completion requests against a rate-limited API, resumably."""


@main.command()
@click.argument("jobs", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Results file (default: <input stem>.results.jsonl beside the input).",
)
@_db_option
@click.option(
    "--concurrency",
    type=click.IntRange(1, 4096),
    default=16,
    show_default=True,
    help="Requests in flight at once.",
)
@click.option(
    "--max-retries",
    type=click.IntRange(0, 100),
    default=5,
    show_default=True,
    help="Retries of a job after server errors, timeouts and connection failures.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(0.1),
    default=120.0,
    show_default=True,
    help="Seconds to wait for one answer.",
)
@click.option(
    "--rpm",
    type=click.FloatRange(min=0.01),
    default=None,
    help="Ceiling on requests per minute (the limiter learns the rest from headers).",
)
@click.option(
    "--tpm", type=click.FloatRange(min=1), default=None, help="Ceiling on tokens per minute."
)
@click.option(
    "--rpd",
    type=click.FloatRange(min=1),
    default=None,
    help="Requests per day your plan allows (counted across runs in this database).",
)
@click.option(
    "--max-wait",
    "max_wait_s",
    type=click.FloatRange(1),
    default=120.0,
    show_default=True,
    help="A wait longer than this is a quota: stop (exit 3) instead of sleeping.",
)
@click.option(
    "--max-line-bytes",
    type=click.IntRange(1024),
    default=10 * 1024 * 1024,
    show_default=True,
    help="Lines longer than this are rejected.",
)
@click.option("--restart", is_flag=True, help="Discard the existing run for this results file.")
@click.option("--mock", is_flag=True, help="Send to the built-in emulator instead of the API.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
)
def run(
    jobs: Path, out: Path | None, db: str | None, mock: bool, log_level: str, **settings: Any
) -> None:
    """Queue JOBS (a JSONL file) and run it to the end; the same command again resumes."""
    env = Environment.from_process()
    secrets = (env.api_key,) if env.api_key else ()
    _setup_logging(log_level, secrets)
    input_path = jobs.resolve()
    out_path = (out or RunOptions.default_out_path(input_path)).resolve()
    if out_path == input_path:
        raise click.UsageError("--out must not be the input file")
    options = RunOptions(input_path, out_path, db or env.db, **settings)
    resume = shlex.join(["runner", *[a for a in sys.argv[1:] if a != "--restart"]])

    async def go() -> int:
        async with api_target(env, mock) as target:
            report = await run_job(options, target, SystemClock())
        click.echo(summary(report, resume))
        return exit_code(report)

    sys.exit(_call(go, secrets))


def _find_run_id(runs: list[Any], selector: str | None) -> Any:
    if not runs:
        raise UsageError("no runs in this database yet")
    if selector is None:
        return runs[0]
    for candidate in runs:
        if selector == str(candidate.id) or str(Path(selector).resolve()) == candidate.out_path:
            return candidate
    raise UsageError(f"no run {selector!r}; `runner runs` lists them")


@main.command()
@click.argument("run_selector", metavar="[RUN]", required=False)
@_db_option
def status(run_selector: str | None, db: str | None) -> None:
    """Show a run's progress (RUN: id or results path; default: the newest)."""
    env = Environment.from_process()

    async def go() -> str:
        async with open_existing_store(db or env.db) as store:
            run = _find_run_id(await store.list_runs(), run_selector)
            counts = await store.counts(run.id)
            usage = await store.usage(run.id)
            errors = await store.recent_errors(run.id, 5)
        return status_text(run, counts, usage, errors)

    click.echo(_call(go))


@main.command("runs")
@_db_option
def list_runs(db: str | None) -> None:
    """List every run, one line each."""
    env = Environment.from_process()

    async def go() -> list[str]:
        if not database_exists(db or env.db):
            return []
        async with open_existing_store(db or env.db) as store:
            return [runs_line(r, await store.counts(r.id)) for r in await store.list_runs()]

    lines = _call(go)
    click.echo("\n".join(lines) if lines else "no runs yet")


@main.command("mock-server")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8808, show_default=True)
@click.option(
    "--rpm",
    "limit_requests",
    type=click.IntRange(1),
    default=None,
    help="Requests allowed per window (default: unlimited).",
)
@click.option("--window-s", type=click.FloatRange(min=0.001), default=60.0, show_default=True)
@click.option(
    "--tpm", "limit_tokens", type=click.IntRange(1), default=None, help="Tokens allowed per window."
)
@click.option("--daily-limit", type=click.IntRange(1), default=None)
@click.option("--latency-ms", type=click.FloatRange(0), default=0.0, show_default=True)
@click.option("--fail-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True)
@click.option(
    "--dialect",
    type=click.Choice(["selam", "openai", "ietf", "ietf-structured", "none"]),
    default="selam",
    show_default=True,
    help="Which rate-limit headers to send.",
)
@click.option("--api-key", default=None, help="Accept only this key (default: any).")
def mock_server(host: str, port: int, **settings: Any) -> None:
    """Serve the built-in emulator of the chat-completions API."""
    config = EmulatorConfig(**settings)
    click.echo(f"emulator listening on http://{host}:{port}/v1 (Ctrl-C to stop)")

    async def go() -> None:
        await serve_forever(config, host, port)

    _call(go)


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@_db_option
def db_upgrade(db: str | None) -> None:
    """Apply every pending migration."""
    env = Environment.from_process()

    async def go() -> None:
        async with open_store(db or env.db, migrate=False) as store:
            await upgrade(store.engine)

    _call(go)
    click.echo("database is up to date")
