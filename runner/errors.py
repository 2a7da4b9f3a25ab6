"""The project's exceptions.

RunnerError                 root; every error the CLI turns into a message and exit code
├── UsageError              bad options or environment (exit 2)
│   └── MissingKeyError     no API key and no --mock
├── InputError              a job file is unusable; carries file, line and reason (exit 2)
├── InputChangedError       the results path belongs to a run of different input (exit 2)
├── RunLockedError          another process is running the same run
└── ProviderError           the provider answered something the run cannot go past
    ├── AuthError           key refused or permission denied for the run (exit 4)
    └── QuotaExhaustedError a long-window quota or budget is spent (exit 3, resumable)
"""

from __future__ import annotations

from dataclasses import dataclass


class RunnerError(Exception):
    """Root of the project's errors."""

    exit_code = 1


class UsageError(RunnerError):
    """Options or environment are unusable."""

    exit_code = 2


class MissingKeyError(UsageError):
    """No API key was found and the emulator was not asked for."""


@dataclass(frozen=True)
class InputProblem:
    """One bad line of a job file."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.reason}"


class InputError(RunnerError):
    """A job file has bad lines; nothing was sent."""

    exit_code = 2

    def __init__(self, problems: list[InputProblem], more: int = 0) -> None:
        self.problems = problems
        self.more = more
        lines = [str(p) for p in problems]
        if more:
            lines.append(f"... and {more} more bad line(s)")
        super().__init__("\n".join(lines))


class InputChangedError(RunnerError):
    """The results path is bound to a run whose input file had other content."""

    exit_code = 2


class RunLockedError(RunnerError):
    """Another live process holds the run."""

    exit_code = 6


class Interrupted(RunnerError):
    """SIGINT or SIGTERM arrived before sending began; nothing was sent (resumable)."""

    exit_code = 3


class ResultsWriteError(RunnerError):
    """The results file could not be written (disk full, permissions); resumable."""

    exit_code = 3


class ProviderError(RunnerError):
    """The provider refused the run as a whole."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class AuthError(ProviderError):
    """The key was refused (401) or lacks permission; every further request would fail too."""

    exit_code = 4


class QuotaExhaustedError(ProviderError):
    """A daily quota, credit balance or budget is spent; the run can resume later."""

    exit_code = 3
