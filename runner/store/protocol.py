"""The queue's narrow interface and the records that cross it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from runner.jobfile import Job

OPEN_STATES = ("pending", "retry", "running")

# (at, status code, error code, message) of one failed attempt.
ErrorEntry = tuple[float, int | None, str, str]
FINAL_STATES = ("done", "failed")


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run: one input file bound to one results file."""

    id: int
    out_path: str
    input_path: str
    input_digest: str
    state: str
    total_jobs: int
    export_seq: int
    export_offset: int
    created_at: float
    updated_at: float
    finished_at: float | None
    active_s: float
    owner: str | None
    heartbeat_at: float | None
    stop_reason: str | None
    limits_json: str | None


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job leased to this process for one attempt."""

    id: int
    custom_id: str
    body: bytes
    attempts: int
    est_tokens: int
    model: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt decided for a job.

    state: done | failed (final, gets a result line) | retry (again at retry_at) |
    pending (handed back unsent, e.g. when dispatch stops).
    """

    job_id: int
    state: str
    status_code: int | None = None
    request_id: str | None = None
    response: bytes | None = None
    error_code: str | None = None
    error_message: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retry_at: float = 0.0
    cached: bool = False


@dataclass(frozen=True, slots=True)
class ResultRow:
    """A recorded final result, as the exporter needs it."""

    seq: int
    job_id: int
    custom_id: str
    state: str
    status_code: int | None
    request_id: str | None
    response: bytes | None
    error_code: str | None
    error_message: str | None
    metadata: bytes | None
    cached: bool = False


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A custom_id seen on two lines."""

    custom_id: str
    line: int
    first_line: int


class Store(Protocol):
    """Persistence of runs and jobs; the database is the source of truth."""

    async def find_run(self, out_path: str) -> RunRecord | None:
        """The run bound to a results path, if any."""
        ...

    async def get_run(self, run_id: int) -> RunRecord | None:
        """A run by id."""
        ...

    async def list_runs(self) -> list[RunRecord]:
        """Every run, newest first."""
        ...

    async def create_run(
        self, out_path: str, input_path: str, digest: str, now: float, owner: str
    ) -> int:
        """Create an empty run in the ingesting state, owned by `owner`; return its id.

        Raises RunLockedError when another process created the same run a moment earlier."""
        ...

    async def delete_run(self, run_id: int) -> None:
        """Remove a run and all of its jobs."""
        ...

    async def add_jobs(self, run_id: int, batch: Sequence[Job]) -> list[Duplicate]:
        """Insert jobs; report those whose custom_id the run already has (not inserted)."""
        ...

    async def mark_ingested(self, run_id: int, total_jobs: int, digest: str, now: float) -> None:
        """Declare the job list complete."""
        ...

    async def take_ownership(
        self, run_id: int, owner: str, expected: str | None, now: float
    ) -> bool:
        """Become the run's owner if its owner is still `expected` (compare and set)."""
        ...

    async def heartbeat(self, run_id: int, owner: str, now: float, limits_json: str | None) -> None:
        """Prove the owner is alive (and publish the limiter's state for `status`, if given)."""
        ...

    async def release(
        self, run_id: int, owner: str, now: float, active_s: float, stop_reason: str | None
    ) -> None:
        """Give up ownership, adding this process's active time and why it stopped."""
        ...

    async def requeue_running(self, run_id: int) -> int:
        """Put every leased job back in the queue (their process is gone); return how many."""
        ...

    async def claim(
        self, run_id: int, owner: str, limit: int, now: float, lease_s: float
    ) -> list[ClaimedJob]:
        """Lease up to `limit` jobs that are due, oldest first."""
        ...

    async def record(
        self,
        run_id: int,
        owner: str,
        outcomes: Sequence[Outcome],
        now: float,
        watermark: tuple[int, int] | None,
    ) -> None:
        """Save attempt outcomes (and the exporter's watermark) in one transaction."""
        ...

    async def results_after(self, run_id: int, seq: int, limit: int) -> list[ResultRow]:
        """Final results with a sequence number above `seq`, in sequence order."""
        ...

    async def set_watermark(self, run_id: int, seq: int, offset: int) -> None:
        """Record how far the results file reflects the database."""
        ...

    async def next_due(self, run_id: int) -> float | None:
        """When the earliest waiting retry is due, if any job waits."""
        ...

    async def has_open_jobs(self, run_id: int) -> bool:
        """Whether any job is pending, waiting to retry or leased."""
        ...

    async def requeue_failed(self, run_id: int, only_code: str | None) -> list[int]:
        """Put failed jobs (optionally of one error code) back in the queue; return their ids.

        The results file is rebuilt from the database on the next run, since those jobs'
        failure lines must give way to their new results.
        """
        ...

    async def rewrite_bodies(self, updates: Sequence[tuple[int, bytes]], model: str) -> None:
        """Replace the request bodies of the given job ids (now asking for `model`)."""
        ...

    async def bodies(self, job_ids: Sequence[int]) -> list[tuple[int, bytes]]:
        """The request bodies of the given job ids."""
        ...

    async def results_in_order(
        self, run_id: int, order: str, after: int, limit: int
    ) -> list[ResultRow]:
        """Final results by finishing sequence (order="finish") or input line (order="input"),
        after the given sequence number or job id."""
        ...

    async def sent_since(self, since: float) -> list[float]:
        """When requests that got an answer were sent, across all runs, since `since`."""
        ...

    async def counts(self, run_id: int) -> dict[str, int]:
        """Jobs per state."""
        ...

    async def usage(self, run_id: int) -> tuple[int, int]:
        """Prompt and completion tokens used by the run so far."""
        ...

    async def usage_by_model(self, run_id: int) -> dict[str, tuple[int, int]]:
        """Prompt and completion tokens used so far, per model."""
        ...

    async def error_kinds(self, run_id: int) -> list[tuple[str, int, ErrorEntry]]:
        """Attempt errors grouped by code: (code, count, newest example), most frequent first."""
        ...

    async def recent_errors(self, run_id: int, limit: int) -> list[ErrorEntry]:
        """The newest attempt errors: (at, status, code, message)."""
        ...
