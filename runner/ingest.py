"""Queueing a job file: validate every line and store the jobs, or resume the run it already is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from runner import parsing
from runner.clock import Clock
from runner.errors import InputChangedError, InputError, InputProblem
from runner.jobfile import Job, file_digest
from runner.ownership import take_run
from runner.store.protocol import RunRecord, Store

MAX_REPORTED_PROBLEMS = 20


@dataclass(frozen=True)
class IngestResult:
    """The run to execute and whether it was resumed rather than newly queued."""

    run: RunRecord
    resumed: bool


class _Problems:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.shown: list[InputProblem] = []
        self.more = 0

    def add(self, line: int, reason: str) -> None:
        if len(self.shown) < MAX_REPORTED_PROBLEMS:
            self.shown.append(InputProblem(self.path, line, reason))
        else:
            self.more += 1


async def prepare_run(
    store: Store,
    input_path: Path,
    out_path: Path,
    *,
    restart: bool,
    clock: Clock,
    max_line_bytes: int,
    owner: str,
) -> IngestResult:
    """The run for (input, results path), owned by `owner`: resumed if it exists and the input
    is unchanged, else validated and queued. Raises RunLockedError if a live process has it."""
    key = str(out_path)
    existing = await store.find_run(key)
    if existing is None and not restart and _has_content(out_path):
        raise InputChangedError(
            f"{out_path} already exists and belongs to no run in this database. "
            f"Re-run with --restart to overwrite it, or choose another --out."
        )
    if existing is not None:
        await take_run(store, existing, owner, clock.time())
        try:
            if existing.state == "ready" and not restart:
                await _check_same_input(existing, input_path, out_path)
                run = await store.get_run(existing.id)
                assert run is not None
                return IngestResult(run, resumed=True)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await store.release(existing.id, owner, clock.time(), 0.0, existing.stop_reason)
            raise
        await store.delete_run(existing.id)
    run = await _ingest(store, input_path, key, clock, max_line_bytes, owner)
    return IngestResult(run, resumed=False)


async def _check_same_input(existing: RunRecord, input_path: Path, out_path: Path) -> None:
    digest = await anyio.to_thread.run_sync(file_digest, input_path)
    if digest == existing.input_digest:
        return
    if existing.input_path != str(input_path):
        raise InputChangedError(
            f"{out_path} holds the results of another input file, {existing.input_path}. "
            f"Choose another --out for {input_path} (or --restart to discard that run)."
        )
    raise InputChangedError(
        f"{input_path} has changed since its run began ({out_path} holds that run's "
        f"results). Re-run with --restart to discard that run and start over, or choose "
        f"another --out."
    )


def _has_content(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


async def _ingest(
    store: Store, input_path: Path, key: str, clock: Clock, max_line_bytes: int, owner: str
) -> RunRecord:
    run_id = await store.create_run(key, str(input_path), "", clock.time(), owner)
    problems = _Problems(input_path)
    digest: list[str] = []
    total = 0
    try:
        async for jobs, bad_lines in parsing.batches(input_path, max_line_bytes, digest):
            for number, reason in bad_lines:
                problems.add(number, reason)
            total += len(jobs)
            # Shielded: a write cancelled halfway would keep its transaction, and its lock,
            # open in the driver's thread, and the clean-up below would wait on that lock.
            with anyio.CancelScope(shield=True):
                await _insert(store, run_id, jobs, problems)
                # A long ingest keeps its claim on the run fresh, like a running engine does.
                await store.heartbeat(run_id, owner, clock.time(), None)
        if problems.shown:
            raise InputError(sorted(problems.shown, key=lambda p: p.line), problems.more)
        if total == 0:
            raise InputError([InputProblem(str(input_path), 0, "the file holds no jobs")])
    except BaseException:
        # Nothing was sent yet, so a failed ingest leaves no trace.
        with anyio.CancelScope(shield=True):
            await store.delete_run(run_id)
        raise
    await store.mark_ingested(run_id, total, digest[0], clock.time())
    run = await store.get_run(run_id)
    assert run is not None
    return run


async def _insert(store: Store, run_id: int, batch: list[Job], problems: _Problems) -> None:
    seen: dict[str, int] = {}
    unique: list[Job] = []
    for job in batch:
        if job.custom_id in seen:
            problems.add(
                job.line,
                f"duplicate custom_id {job.custom_id!r} (first on line {seen[job.custom_id]})",
            )
            continue
        seen[job.custom_id] = job.line
        unique.append(job)
    for dup in await store.add_jobs(run_id, unique):
        problems.add(
            dup.line, f"duplicate custom_id {dup.custom_id!r} (first on line {dup.first_line})"
        )
