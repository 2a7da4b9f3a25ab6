"""The command line: parse options, build settings, call the engine, map errors to exit codes.

Exit codes: 0 all jobs done; 1 the run finished with jobs failed for good; 2 bad usage or bad
input (nothing was sent); 3 stopped early but resumable (interrupted, quota, a cap, max
runtime); 4 the API refused the key or permission; 5 (`health`) the API is unreachable;
6 another process is already working on this run; 70 internal error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import orjson

from runner.app import RunReport, api_target, exit_code, run_job
from runner.cache.policy import DEFAULT_TTL, parse_ttl
from runner.cli_cache import cache
from runner.cli_common import Finite, call, db_option
from runner.cli_runs import cancel_cmd, export_cmd, list_runs, retry_failed_cmd, status
from runner.cli_tools import db, health, mock_server
from runner.clock import SystemClock
from runner.config import RESULTS_SUFFIX, Environment, RunOptions
from runner.dryrun import describe, estimate
from runner.errors import InputError, RunnerError
from runner.jobfile import DEFAULT_MAX_LINE_BYTES
from runner.logs import setup_logging
from runner.pricing import PriceTable
from runner.redact import redact
from runner.report import summary, summary_dict

# When several files run, the most serious outcome decides the exit code.
_SEVERITY = (4, 2, 6, 3, 1, 0)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="runner")
def cli() -> None:
    """Run files of chat-completion requests against a rate-limited API, resumably."""


def main() -> None:
    """The `runner` command: run it, then leave without tearing the interpreter down.

    By then everything is durable (the database committed, files closed) and tearing down the
    interpreter's modules would only cost time: about 0.15 s, a fifth of a short cron run.
    """
    code: object = 0
    try:
        cli()
    except SystemExit as exc:
        code = exc.code
    if code is None:
        code = 0
    elif not isinstance(code, int):
        click.echo(code, err=True)
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _ttl(_ctx: click.Context, _param: click.Parameter, value: str) -> float:
    try:
        return parse_ttl(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _options(fn: Any) -> Any:
    specs: list[tuple[tuple[str, ...], dict[str, Any]]] = [
        (
            ("--out",),
            dict(
                type=click.Path(dir_okay=False, path_type=Path),
                default=None,
                help="Results file (default: <input stem>.results.jsonl beside it).",
            ),
        ),
        (
            ("--concurrency",),
            dict(
                type=click.IntRange(1, 4096),
                default=16,
                show_default=True,
                help="Requests in flight at once.",
            ),
        ),
        (
            ("--max-retries",),
            dict(
                type=click.IntRange(0, 100),
                default=5,
                show_default=True,
                help="Retries after 5xx, 408/409, timeouts, broken connections.",
            ),
        ),
        (
            ("--timeout", "timeout_s"),
            dict(
                type=Finite(0.1),
                default=120.0,
                show_default=True,
                help="Seconds to wait for an answer.",
            ),
        ),
        (
            ("--rpm",),
            dict(
                type=Finite(min=0.01),
                default=None,
                help="Ceiling on requests per minute (the rest is learned from headers).",
            ),
        ),
        (
            ("--tpm",),
            dict(type=Finite(min=1), default=None, help="Ceiling on tokens per minute."),
        ),
        (
            ("--rpd",),
            dict(
                type=Finite(min=1),
                default=None,
                help="Requests per day your plan allows (counted across runs).",
            ),
        ),
        (
            ("--max-wait", "max_wait_s"),
            dict(
                type=Finite(1),
                default=120.0,
                show_default=True,
                help="A longer wait is a quota: stop with exit 3.",
            ),
        ),
        (
            ("--max-tokens",),
            dict(
                type=click.IntRange(1),
                default=None,
                help="Stop dispatch once the run has used this many tokens.",
            ),
        ),
        (
            ("--max-cost",),
            dict(
                type=Finite(min=0),
                default=None,
                help="Stop dispatch once the run has cost this much (USD).",
            ),
        ),
        (
            ("--max-runtime", "max_runtime_s"),
            dict(
                type=Finite(min=1),
                default=None,
                help="Stop cleanly after this many seconds.",
            ),
        ),
        (
            ("--prices", "prices_path"),
            dict(
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                default=None,
                help="TOML/JSON file of prices per model.",
            ),
        ),
        (
            ("--price", "price_overrides"),
            dict(
                multiple=True,
                metavar="MODEL=IN/OUT",
                help="USD per 1M input/output tokens (repeatable).",
            ),
        ),
        (
            ("--max-line-bytes",),
            dict(
                type=click.IntRange(1024),
                default=DEFAULT_MAX_LINE_BYTES,
                show_default=True,
                help="Longer lines are rejected.",
            ),
        ),
        (
            ("--cache", "cache_mode"),
            dict(
                type=click.Choice(["auto", "always", "off"]),
                default="auto",
                show_default=True,
                help="Serve repeated requests from the cache: auto = deterministic ones only.",
            ),
        ),
        (
            ("--cache-url",),
            dict(
                default=None, help="redis://host:port/db to share the cache (default: the run DB)."
            ),
        ),
        (
            ("--cache-ttl", "cache_ttl_s"),
            dict(
                default=DEFAULT_TTL,
                show_default=True,
                callback=_ttl,
                help="How long cached answers are served: 30m, 12h, 7d, forever.",
            ),
        ),
        (
            ("--progress",),
            dict(
                type=click.Choice(["auto", "live", "plain", "off"]),
                default="auto",
                show_default=True,
                help="Live display on a terminal, plain lines otherwise.",
            ),
        ),
        (
            ("--progress-interval", "progress_interval_s"),
            dict(
                type=Finite(0.1),
                default=30.0,
                show_default=True,
                help="Seconds between plain lines.",
            ),
        ),
    ]
    for names, kwargs in reversed(specs):
        fn = click.option(*names, **kwargs)(fn)
    return fn


@cli.command()
@click.argument(
    "jobs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@_options
@db_option
@click.option("--restart", is_flag=True, help="Discard the existing run for this results file.")
@click.option("--mock", is_flag=True, help="Send to the built-in emulator instead of the API.")
@click.option(
    "--dry-run", is_flag=True, help="Validate and estimate tokens and cost; send nothing."
)
@click.option("--quiet", "-q", is_flag=True, help="No progress and no summary (errors only).")
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the end-of-run summary as JSON to this file.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
)
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True
)
def run(
    jobs: tuple[Path, ...],
    out: Path | None,
    db: str | None,
    mock: bool,
    dry_run: bool,
    quiet: bool,
    summary_json: Path | None,
    log_level: str,
    log_file: Path | None,
    log_format: str,
    **settings: Any,
) -> None:
    """Queue JOBS (JSONL files, each its own run) and run them; the same command resumes."""
    env = Environment.from_process()
    secrets = (env.api_key,) if env.api_key else ()
    setup_logging(log_level, secrets, log_file, log_format)
    if out is not None and len(jobs) > 1:
        raise click.UsageError("--out names one results file; give one JOBS file with it")
    if len(jobs) > 1:
        # `runner run inbox/*.jsonl` also matches the results files written beside the inputs.
        jobs = tuple(p for p in jobs if not p.name.endswith(RESULTS_SUFFIX))
    if quiet:
        settings["progress"] = "off"
    if dry_run:
        sys.exit(_dry_run(jobs, settings))
    options = [_run_options(path, out, db or env.db, settings, mock) for path in jobs]
    resume = shlex.join(["runner", *[a for a in sys.argv[1:] if a != "--restart"]])

    async def go() -> tuple[int, list[dict[str, object]]]:
        codes, reports = [], []
        async with api_target(env, mock) as target:
            for option in options:
                code, report = await _one(option, target, secrets)
                codes.append(code)
                if report is not None:
                    reports.append(summary_dict(report, code, resume))
                    if not quiet:
                        # A closed or full stdout must not turn a finished run into exit 70.
                        with contextlib.suppress(OSError):
                            click.echo(summary(report, resume))
        return min(codes, key=_SEVERITY.index), reports

    code, reports = call(go, secrets)
    if summary_json is not None:
        payload = reports[0] if len(reports) == 1 else {"runs": reports}
        summary_json.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
    sys.exit(code)


def _run_options(
    path: Path, out: Path | None, db: str, settings: dict[str, Any], mock: bool
) -> RunOptions:
    if not path.is_file():
        raise click.UsageError(
            f"{path} is not a regular file; a run must be able to re-read its input to resume "
            "(save a pipe's output to a file first)"
        )
    input_path = path.resolve()
    out_path = (out or RunOptions.default_out_path(input_path, mock)).resolve()
    if out_path == input_path:
        raise click.UsageError("--out must not be the input file")
    if "://" not in db:
        database = Path(db).expanduser().resolve()
        taken = {
            database,
            database.with_name(database.name + "-wal"),
            database.with_name(database.name + "-shm"),
        }
        if out_path in taken:
            raise click.UsageError("--out must not be the database file")
    values = dict(settings)
    values["price_overrides"] = tuple(values.get("price_overrides") or ())
    return RunOptions(input_path, out_path, db, **values)


async def _one(
    options: RunOptions, target: Any, secrets: tuple[str, ...]
) -> tuple[int, RunReport | None]:
    """Run one file; a bad file is reported and the others still run."""
    try:
        report = await run_job(options, target, SystemClock())
    except (InputError, RunnerError) as exc:
        if isinstance(exc, InputError) or exc.exit_code in (2, 6):
            click.echo(f"error: {redact(str(exc), secrets)}", err=True)
            return exc.exit_code, None
        raise
    return exit_code(report), report


def _dry_run(jobs: Sequence[Path], settings: dict[str, Any]) -> int:
    prices = PriceTable.load(settings.get("prices_path"), settings.get("price_overrides") or ())
    worst = 0
    for path in jobs:
        try:
            click.echo(describe(estimate(path, settings["max_line_bytes"]), prices))
        except InputError as exc:
            click.echo(f"error: {exc}", err=True)
            worst = 2
    return worst


for command in (
    status,
    list_runs,
    retry_failed_cmd,
    export_cmd,
    cancel_cmd,
    mock_server,
    health,
    db,
    cache,
):
    cli.add_command(command)
