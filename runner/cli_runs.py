"""Commands about runs: status, runs, retry-failed, export, cancel."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from runner.cli_common import call, db_option, find_run
from runner.clock import SystemClock
from runner.config import Environment, RunOptions
from runner.manage import cancel, export, retry_failed
from runner.report import runs_line, status_text
from runner.store.connect import database_exists, open_existing_store
from runner.store.protocol import RunRecord

RUN_ARG = click.argument("run_selector", metavar="[RUN]", required=False)


@click.command()
@RUN_ARG
@db_option
def status(run_selector: str | None, db: str | None) -> None:
    """Show a run's progress (RUN: id or results path; default: the newest)."""
    env = Environment.from_process()

    async def go() -> str:
        async with open_existing_store(db or env.db) as store:
            run = find_run(await store.list_runs(), run_selector)
            counts = await store.counts(run.id)
            usage = await store.usage(run.id)
            errors = await store.recent_errors(run.id, 5)
            kinds = await store.error_kinds(run.id)
        return status_text(run, counts, usage, errors, kinds)

    click.echo(call(go))


@click.command("runs")
@db_option
def list_runs(db: str | None) -> None:
    """List every run, one line each."""
    env = Environment.from_process()

    async def go() -> list[str]:
        if not database_exists(db or env.db):
            return []
        async with open_existing_store(db or env.db) as store:
            return [runs_line(r, await store.counts(r.id)) for r in await store.list_runs()]

    lines = call(go)
    click.echo("\n".join(lines) if lines else "no runs yet")


@click.command("retry-failed")
@RUN_ARG
@click.option("--only", "only_code", default=None, help="Only failures with this error code.")
@click.option("--model", default=None, help="Send the re-queued jobs to this model instead.")
@db_option
def retry_failed_cmd(
    run_selector: str | None, only_code: str | None, model: str | None, db: str | None
) -> None:
    """Put a run's failed jobs back in the queue; run the same `runner run` to send them."""
    env = Environment.from_process()

    async def go() -> tuple[int, str]:
        async with open_existing_store(db or env.db) as store:
            run = find_run(await store.list_runs(), run_selector)
            count = await retry_failed(store, run, only_code, model, SystemClock().time())
        return count, _run_command(run, db)

    count, command = call(go)
    click.echo(f"{count} failed job(s) queued again; send them with: {command}")


def _run_command(run: RunRecord, db: str | None) -> str:
    """The `runner run` line that works on this run again."""
    words = ["runner", "run", run.input_path]
    out, input_path = Path(run.out_path), Path(run.input_path)
    if out == RunOptions.default_out_path(input_path, mock=True):
        words.append("--mock")  # a run with the emulator's default results file
    elif out != RunOptions.default_out_path(input_path):
        words += ["--out", run.out_path]
    if db:
        words += ["--db", db]
    return shlex.join(words)


@click.command("export")
@RUN_ARG
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="File to write."
)
@click.option(
    "--order",
    type=click.Choice(["finish", "input"]),
    default="finish",
    show_default=True,
    help="Lines in the order jobs finished, or in input-file order.",
)
@db_option
def export_cmd(run_selector: str | None, out: Path, order: str, db: str | None) -> None:
    """Write a clean results file for a run, rebuilt from the database."""
    env = Environment.from_process()
    target = out.resolve()

    async def go() -> int:
        async with open_existing_store(db or env.db) as store:
            run = find_run(await store.list_runs(), run_selector)
            return await export(store, run, target, order)

    click.echo(f"{call(go)} result line(s) written to {out}")


@click.command("cancel")
@click.argument("run_selector", metavar="RUN")
@db_option
def cancel_cmd(run_selector: str, db: str | None) -> None:
    """Fail every unfinished job of RUN (id or results path) with code `cancelled`."""
    env = Environment.from_process()

    async def go() -> int:
        async with open_existing_store(db or env.db) as store:
            run = find_run(await store.list_runs(), run_selector)
            return await cancel(store, run, SystemClock())

    click.echo(f"{call(go)} job(s) cancelled")
