"""Retry policy: how long to wait before the next attempt, and whether there is one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; waits the server asks for are honoured."""

    max_retries: int = 5
    base_s: float = 0.5
    cap_s: float = 60.0
    # 429s mean "slow down", not "broken": they get a larger allowance of their own so a busy
    # account does not fail jobs, while a run that only ever sees 429s still ends.
    max_rate_limited: int = 30

    def backoff_s(self, attempt: int, jitter: float) -> float:
        """Full-jitter delay before retry number `attempt` (1-based); `jitter` is in [0, 1)."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** max(0, attempt - 1))
        return ceiling * jitter

    def delay_s(self, attempt: int, jitter: float, server_wait_s: float | None) -> float:
        """The wait before the next attempt: the server's word when given, else backoff."""
        if server_wait_s is not None:
            # A small spread stops every waiting worker from returning in the same instant.
            return server_wait_s + 0.1 * server_wait_s * jitter
        return self.backoff_s(attempt, jitter)

    def gives_up(self, attempts_made: int, rate_limited: bool) -> bool:
        """Whether a job that has made `attempts_made` attempts gets no more."""
        limit = self.max_rate_limited if rate_limited else self.max_retries
        return attempts_made > limit
